//! The Manta buckets API (SPEC §8): `/:account/buckets` (list), `/:account/buckets/:bucket`
//! (PUT creates, HEAD, DELETE when empty, GET lists keys), and
//! `/:account/buckets/:bucket/objects/:key` (the object verbs of `write.rs` and `read.rs`).
//!
//! Listings are `application/x-json-stream; type=bucket`-style JSON lines: buckets as
//! `{"name","type":"bucket","mtime"}`, keys as `{"name","type":"bucketobject",…}` and common
//! prefixes as `{"name","type":"group"}`; the header `next-marker` says where the next page
//! starts, percent-encoded (absent on the last page).

use std::sync::Arc;

use http::{header, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{KeyItem, KeyQuery};
use serde_json::json;

use crate::dirs::{self, DEFAULT_LIMIT, MAX_LIMIT};
use crate::path::ApiPath;
use crate::{headers, query, read, write, Gateway};

/// Content type of a bucket or key listing.
pub const LIST_TYPE: &str = "application/x-json-stream; type=bucket";

fn not_allowed(m: &Method, path: &ApiPath) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{m} is not allowed on {}", path.full()),
    )
}

/// Route a request under `/:account/buckets`.
pub async fn route(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    body: Incoming,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let m = parts.method.clone();
    let full = path.full();
    if path.bucket_key().is_some() {
        let missing_object = |e: ApiError| match e.code {
            Code::ResourceNotFound => ApiError::new(Code::ObjectNotFound, e.message),
            _ => e,
        };
        return match m {
            Method::GET | Method::HEAD => read::get_or_head(gw, &parts, path).await,
            Method::PUT => match headers::special_type(&parts.headers) {
                Some("link") => write::put_link(gw, &parts, path).await,
                Some(_) => Err(ApiError::new(
                    Code::InvalidArgument,
                    "a bucket holds only objects",
                )),
                None if query(&parts).get("metadata").map(String::as_str) == Some("true") => {
                    write::update_metadata(gw, &parts, path).await
                }
                None => write::put(gw, parts, body, path).await,
            },
            Method::DELETE => write::delete(gw, &parts, path).await,
            Method::OPTIONS => Ok(mobula_http::status(StatusCode::OK)),
            _ => Err(not_allowed(&m, path)),
        }
        .map_err(missing_object);
    }
    match (path.depth(), m.clone()) {
        (2, Method::GET | Method::HEAD) => list_buckets(gw, &parts, &full).await,
        (3, Method::PUT) => {
            gw.meta.create_bucket(&full).await?;
            Ok(mobula_http::status(StatusCode::NO_CONTENT))
        }
        (3, Method::HEAD) => {
            let b = gw.meta.get(&full).await?.ok_or_else(|| no_bucket(path))?;
            let mut r = mobula_http::status(StatusCode::OK);
            if let Ok(v) = headers::http_date(b.mtime).parse() {
                r.headers_mut().insert(header::LAST_MODIFIED, v);
            }
            Ok(r)
        }
        (3, Method::DELETE) => {
            gw.meta.delete_bucket(&full).await?;
            Ok(mobula_http::status(StatusCode::NO_CONTENT))
        }
        (3 | 4, Method::GET) if path.parts.get(3).is_none_or(|o| o == "objects") => {
            let bucket = format!("/{}/buckets/{}", path.account(), path.parts[2]);
            list_keys(gw, &parts, &bucket).await
        }
        (_, Method::OPTIONS) => Ok(mobula_http::status(StatusCode::OK)),
        (2 | 3, _) => Err(not_allowed(&m, path)),
        _ => Err(ApiError::new(
            Code::ResourceNotFound,
            format!("{full} is not a bucket path (/:account/buckets/:bucket/objects/:key)"),
        )),
    }
}

fn no_bucket(path: &ApiPath) -> ApiError {
    ApiError::new(
        Code::BucketNotFound,
        format!("bucket {} does not exist", path.parts[2]),
    )
}

fn lines(items: impl Iterator<Item = serde_json::Value>) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    for v in items {
        serde_json::to_writer(&mut out, &v).map_err(ApiError::internal)?;
        out.push(b'\n');
    }
    Ok(out)
}

async fn list_buckets(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    area: &str,
) -> Result<Response<Body>, ApiError> {
    let q = dirs::list_query(parts, area)?;
    let page = gw.meta.list(&q).await?;
    let body =
        lines(page.entries.iter().map(
            |e| json!({"name": e.name, "type": "bucket", "mtime": headers::rfc3339(e.mtime)}),
        ))?;
    let mut r = if parts.method == Method::HEAD {
        mobula_http::status(StatusCode::OK)
    } else {
        Response::new(mobula_http::full(body))
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(LIST_TYPE));
    r.headers_mut().insert("result-set-size", page.total.into());
    Ok(r)
}

async fn list_keys(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    bucket: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(parts);
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=MAX_LIMIT) => n,
            _ => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("limit must be 1 to {MAX_LIMIT}, not {v:?}"),
                ))
            }
        },
    };
    let page = gw
        .meta
        .list_keys(&KeyQuery {
            bucket: bucket.to_string(),
            prefix: q.get("prefix").cloned().unwrap_or_default(),
            delimiter: q.get("delimiter").cloned().unwrap_or_default(),
            start_after: q.get("marker").filter(|m| !m.is_empty()).cloned(),
            limit,
        })
        .await?;
    let body = lines(page.items.iter().map(|i| match i {
        KeyItem::Prefix(p) => json!({"name": p, "type": "group"}),
        KeyItem::Object(e) => {
            let mut v = dirs::line(e);
            v["type"] = json!("bucketobject");
            v
        }
    }))?;
    let mut r = Response::new(mobula_http::full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(LIST_TYPE));
    if page.truncated {
        let marker = page.items.last().map(|i| {
            percent_encoding::utf8_percent_encode(i.marker(), percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        });
        if let Some(Ok(v)) = marker.map(|m| HeaderValue::from_str(&m)) {
            h.insert("next-marker", v);
        }
    }
    Ok(r)
}
