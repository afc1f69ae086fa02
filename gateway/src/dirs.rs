//! Directories: create (idempotent, no implicit parents), `HEAD`, and paged listings as
//! `application/x-json-stream; type=directory`, one JSON object per line.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Response, StatusCode};
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{Entry, Kind, ListQuery, SortBy};
use serde_json::json;

use crate::path::ApiPath;
use crate::{headers, query, Gateway};

/// Content type of a directory.
pub const DIR_TYPE: &str = "application/x-json-stream; type=directory";
/// Default and largest page size.
pub const DEFAULT_LIMIT: u32 = 256;
pub const MAX_LIMIT: u32 = 1024;

/// `PUT` of a directory.
pub async fn mkdir(gw: &Arc<Gateway>, path: &ApiPath) -> Result<Response<Body>, ApiError> {
    gw.meta.mkdir(&path.full()).await?;
    Ok(mobula_http::status(StatusCode::NO_CONTENT))
}

/// `GET`/`HEAD` of the directory at `full` (the account root included).
pub async fn get_or_head(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    full: &str,
) -> Result<Response<Body>, ApiError> {
    let entry =
        gw.meta.get(full).await?.ok_or_else(|| {
            ApiError::new(Code::ResourceNotFound, format!("{full} does not exist"))
        })?;
    respond(gw, parts, &entry).await
}

/// The listing query of a request.
pub fn list_query(parts: &http::request::Parts, dir: &str) -> Result<ListQuery, ApiError> {
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
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("name") | Some("none") => SortBy::Name,
        Some("mtime") => SortBy::Mtime,
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("sort must be name or mtime, not {other:?}"),
            ))
        }
    };
    let reverse = match q.get("sort_order").map(String::as_str) {
        None | Some("") | Some("forward") => false,
        Some("reverse") => true,
        Some(other) => {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("sort_order must be reverse, not {other:?}"),
            ))
        }
    };
    Ok(ListQuery {
        path: dir.to_string(),
        marker: q.get("marker").filter(|m| !m.is_empty()).cloned(),
        limit,
        sort,
        reverse,
    })
}

/// One listing line.
pub fn line(e: &Entry) -> serde_json::Value {
    let mut v = json!({
        "name": e.name,
        "type": match e.kind { Kind::Directory => "directory", Kind::Object => "object" },
        "mtime": headers::rfc3339(e.mtime),
    });
    if let Some(d) = &e.data {
        v["size"] = json!(d.size);
        v["etag"] = json!(d.id);
        v["contentType"] = json!(e.content_type);
        v["contentMD5"] = json!(d.md5);
        v["durability"] = json!(d.durability);
    }
    v
}

/// Answer a `GET` (listing) or `HEAD` of a directory entry.
pub async fn respond(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    dir: &Entry,
) -> Result<Response<Body>, ApiError> {
    let (mut resp, total) = if parts.method == Method::HEAD {
        (mobula_http::status(StatusCode::OK), dir.children)
    } else {
        let q = list_query(parts, &dir.path)?;
        let page = gw.meta.list(&q).await?;
        let mut out = Vec::with_capacity(page.entries.len() * 160);
        for e in &page.entries {
            serde_json::to_writer(&mut out, &line(e)).map_err(ApiError::internal)?;
            out.push(b'\n');
        }
        (Response::new(mobula_http::full(out)), page.total)
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(DIR_TYPE));
    h.insert("result-set-size", total.into());
    if let Ok(v) = headers::http_date(dir.mtime).parse() {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(resp)
}
