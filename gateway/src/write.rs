//! Object writes: PUT (its checks, then the fan-out of [`crate::fanout`], then one metadata
//! commit), snaplinks, metadata updates, deletes.
//!
//! Metadata is committed only after every node answered that its copy is durable. On any
//! failure (client gone or stalled, a node lost mid-body, a wrong `Content-MD5`, a failed
//! precondition) every copy is queued for reclamation and nothing becomes visible.

use std::sync::Arc;

use http::{header, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{split_path, DeleteEntry, PutLink, PutObject, UpdateMetadata};

use crate::fanout::{discard_after, write_data};
use crate::headers;
use crate::path::ApiPath;
use crate::Gateway;

fn written(etag: &str, mtime: i64, md5: Option<&str>) -> Response<Body> {
    let mut r = mobula_http::status(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    if let Ok(v) = etag.parse() {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = headers::http_date(mtime).parse() {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(Ok(v)) = md5.map(str::parse) {
        h.insert("computed-md5", v);
    }
    r
}

/// `PUT` of an object.
pub async fn put(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    body: Incoming,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let h = &parts.headers;
    let chunked = headers::get(h, header::TRANSFER_ENCODING)
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length =
        match headers::get(h, header::CONTENT_LENGTH) {
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                ApiError::new(Code::InvalidArgument, "content-length is not a number")
            })?),
            None if chunked => None,
            None => {
                return Err(ApiError::new(
                    Code::ContentLengthRequired,
                    "PUT needs content-length or transfer-encoding: chunked",
                ))
            }
        };
    if length.is_some_and(|l| l > gw.cfg.max_object_size) {
        return Err(ApiError::new(
            Code::MaxContentLengthExceeded,
            format!("objects are at most {} bytes", gw.cfg.max_object_size),
        ));
    }
    let durability = headers::durability(h)?;
    let content_md5 = headers::content_md5(h)?;
    let (content_type, stored) = headers::stored(h)?;
    let preconditions = headers::preconditions(h);
    let full = path.full();
    // Fail early, before any byte moves: the parent must be a directory and the
    // preconditions must hold now (they are checked again atomically at commit).
    let (parent, _) = split_path(&full);
    let (parent_entry, current) = tokio::try_join!(gw.meta.get(parent), async {
        if headers::has_preconditions(h) {
            gw.meta.get(&full).await
        } else {
            Ok(None)
        }
    })?;
    match parent_entry {
        None if mobula_metadata::api::is_bucket(parent) => {
            return Err(ApiError::new(
                Code::BucketNotFound,
                format!("bucket {} does not exist", split_path(parent).1),
            ))
        }
        None => {
            return Err(ApiError::new(
                Code::DirectoryDoesNotExist,
                format!("{parent} does not exist"),
            ))
        }
        Some(e) if e.kind != mobula_metadata::api::Kind::Directory => {
            return Err(ApiError::new(
                Code::ParentNotDirectory,
                format!("{parent} is not a directory"),
            ))
        }
        _ => {}
    }
    if headers::has_preconditions(h) {
        mobula_metadata::api::check_preconditions(current.as_ref(), &preconditions)?;
    }
    let targets = gw.nodes.place(durability, length.unwrap_or(0))?;
    let data = write_data(gw, &targets, durability, body, content_md5, true).await?;
    let req = PutObject {
        parents: false,
        path: full,
        data: data.clone(),
        content_type,
        headers: stored,
        preconditions,
    };
    match gw.meta.put_object(&req).await {
        Ok(e) => Ok(written(&data.id, e.mtime, Some(&data.md5))),
        Err(err) => {
            discard_after(gw, &err, &data.id, &data.nodes).await;
            Err(err)
        }
    }
}

/// `PUT` with `Content-Type: application/json; type=link`: a snaplink.
pub async fn put_link(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let loc = headers::get(&parts.headers, header::LOCATION)
        .ok_or_else(|| ApiError::new(Code::LocationRequired, "a link needs a Location header"))?;
    let src = ApiPath::parse(loc.split('?').next().unwrap_or(loc))
        .map_err(|e| ApiError::new(Code::InvalidLink, format!("bad Location: {}", e.message)))?;
    if src.account() != path.account() {
        return Err(ApiError::new(
            Code::AuthorizationFailed,
            "links may only point at objects of the same account",
        ));
    }
    let e = gw
        .meta
        .put_link(&PutLink {
            path: path.full(),
            source: src.full(),
            preconditions: headers::preconditions(&parts.headers),
        })
        .await?;
    let etag = e.data.as_ref().map(|d| d.id.clone()).unwrap_or_default();
    Ok(written(&etag, e.mtime, None))
}

/// `PUT ?metadata=true`: replace stored headers, keep the data.
pub async fn update_metadata(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let (content_type, stored) = headers::stored(&parts.headers)?;
    let e = gw
        .meta
        .update_metadata(&UpdateMetadata {
            path: path.full(),
            content_type,
            headers: stored,
        })
        .await?;
    let etag = e.data.as_ref().map(|d| d.id.clone()).unwrap_or_default();
    Ok(written(&etag, e.mtime, None))
}

/// `DELETE` of an object, link or empty directory.
pub async fn delete(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    gw.meta
        .delete(&DeleteEntry {
            path: path.full(),
            preconditions: headers::preconditions(&parts.headers),
        })
        .await?;
    Ok(mobula_http::status(StatusCode::NO_CONTENT))
}
