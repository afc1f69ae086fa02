//! Object writes: streaming PUT fanned out to several storage nodes at once, snaplinks,
//! metadata updates, deletes.
//!
//! A PUT streams the body once: each chunk is hashed (MD5 and blake3) and handed to one bounded
//! channel per target node, so the slowest node paces the client and no object is ever held in
//! memory. Metadata is committed only after every node answered that its copy is durable.
//! On any failure (client gone or stalled, a node lost, a wrong `Content-MD5`, a failed
//! precondition) every copy is queued for reclamation and nothing becomes visible.

use std::io;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::SinkExt;
use http::{header, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use md5::Digest;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::types::{Data, DeleteEntry, Garbage, PutLink, PutObject, UpdateMetadata};
use mobula_storage_node::store::new_id;

use crate::headers;
use crate::path::ApiPath;
use crate::Gateway;

/// Write the body to `targets` (node id, url) as new data; returns it once durable everywhere.
pub async fn write_data(
    gw: &Gateway,
    targets: &[(String, String)],
    durability: u8,
    mut body: Incoming,
    content_md5: Option<String>,
) -> Result<Data, ApiError> {
    let id = new_id();
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for (_, url) in targets {
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
        senders.push(tx);
        let client = gw.node_client.clone();
        let (url, id, md5) = (url.clone(), id.clone(), content_md5.clone());
        tasks.push(tokio::spawn(async move {
            client.put(&url, &id, rx, md5.as_deref()).await
        }));
    }
    let mut md5 = md5::Md5::new();
    let mut b3 = blake3::Hasher::new();
    let mut size = 0u64;
    let mut failure: Option<ApiError> = None;
    'feed: loop {
        let frame = match tokio::time::timeout(gw.cfg.upload_timeout, body.frame()).await {
            Err(_) => {
                failure = Some(ApiError::new(
                    Code::UploadTimeout,
                    format!("no data received for {:?}", gw.cfg.upload_timeout),
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(ApiError::new(
                    Code::InvalidArgument,
                    format!("reading request body: {e}"),
                ));
                break;
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > gw.cfg.max_object_size {
            failure = Some(ApiError::new(
                Code::MaxContentLengthExceeded,
                format!("objects are at most {} bytes", gw.cfg.max_object_size),
            ));
            break;
        }
        md5.update(&data);
        b3.update(&data);
        for tx in senders.iter_mut() {
            if tx.send(Ok(data.clone())).await.is_err() {
                // That node's request ended early: its error is collected below.
                failure = Some(ApiError::new(
                    Code::ServiceUnavailable,
                    "a storage node failed during the upload",
                ));
                break 'feed;
            }
        }
    }
    if failure.is_some() {
        for tx in senders.iter_mut() {
            let _ = tx.send(Err(io::Error::other("upload aborted"))).await;
        }
    }
    drop(senders);
    let computed = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    let blake3 = b3.finalize().to_hex().to_string();
    let mut node_errors = Vec::new();
    for ((node, _), t) in targets.iter().zip(tasks) {
        match t.await {
            Ok(Ok(w)) if w.size == size && w.blake3 == blake3 => {}
            Ok(Ok(w)) if w.size == size => node_errors.push(ApiError::internal(format!(
                "node {node} received different bytes (blake3 {})",
                w.blake3
            ))),
            Ok(Ok(w)) => node_errors.push(ApiError::internal(format!(
                "node {node} stored {} bytes of {size}",
                w.size
            ))),
            Ok(Err(e)) => {
                if e.code == Code::ServiceUnavailable {
                    gw.nodes.mark_failed(node);
                }
                node_errors.push(e)
            }
            Err(e) => node_errors.push(ApiError::internal(e)),
        }
    }
    if failure.is_none() {
        if let Some(want) = &content_md5 {
            if *want != computed {
                failure = Some(ApiError::new(
                    Code::ContentMD5Mismatch,
                    format!("content-md5 {want} does not match computed {computed}"),
                ));
            }
        }
    }
    let failure = failure.or_else(|| {
        // Prefer a client-meaningful code (e.g. ContentMD5Mismatch) over a generic one.
        node_errors
            .iter()
            .find(|e| e.code != Code::InternalError)
            .or(node_errors.first())
            .cloned()
    });
    let nodes: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
    if let Some(e) = failure {
        discard(gw, &id, &nodes).await;
        if e.code == Code::ServiceUnavailable {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!("storage node failure, nothing was stored: {}", e.message),
            ));
        }
        return Err(e);
    }
    Ok(Data {
        id,
        size,
        md5: computed,
        blake3,
        durability,
        nodes,
    })
}

/// Queue data that will never be committed for deletion from `nodes`.
pub async fn discard(gw: &Gateway, id: &str, nodes: &[String]) {
    let g = Garbage {
        data_id: id.to_string(),
        nodes: nodes.to_vec(),
    };
    if let Err(e) = gw.meta.queue_garbage(&g).await {
        tracing::warn!("could not queue {id} for reclamation ({e}); deleting directly");
        for n in nodes {
            if let Some(url) = gw.nodes.url(n) {
                let _ = gw.node_client.delete(&url, id).await;
            }
        }
    }
}

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
    let (parent, _) = mobula_metadata::types::split_path(&full);
    let (parent_entry, current) = tokio::try_join!(gw.meta.get(parent), async {
        if headers::has_preconditions(h) {
            gw.meta.get(&full).await
        } else {
            Ok(None)
        }
    })?;
    match parent_entry {
        None => {
            return Err(ApiError::new(
                Code::DirectoryDoesNotExist,
                format!("{parent} does not exist"),
            ))
        }
        Some(e) if e.kind != mobula_metadata::types::Kind::Directory => {
            return Err(ApiError::new(
                Code::ParentNotDirectory,
                format!("{parent} is not a directory"),
            ))
        }
        _ => {}
    }
    if headers::has_preconditions(h) {
        mobula_metadata::namespace::check_preconditions(current.as_ref(), &preconditions)?;
    }
    let targets = gw.nodes.place(durability, length.unwrap_or(0))?;
    let data = write_data(gw, &targets, durability, body, content_md5).await?;
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
            discard(gw, &data.id, &data.nodes).await;
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
