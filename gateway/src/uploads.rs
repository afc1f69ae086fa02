//! Multipart uploads (SPEC §3), in Manta's shape:
//! `POST /:account/uploads` `{"objectPath","headers"}` → 201 `{"id","partsDirectory"}`;
//! `PUT <partsDirectory>/<n>` streams part `n` to the upload's pinned nodes;
//! `GET <partsDirectory>/state`; `POST <partsDirectory>/commit` `{"parts":[etags]}` → 201
//! (idempotent: the same parts again answer 201 again); `POST <partsDirectory>/abort` → 204.
//!
//! The nodes are chosen when the upload is created, so that commit can concatenate the parts
//! on each node locally; the new data item then replaces the target object atomically.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{header, Method, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{
    now_ms, CommitUpload, Data, Entry, Headers, Preconditions, PutPart, Upload,
};
use mobula_storage_node::api::{new_id, valid_id};
use serde::Deserialize;
use serde_json::json;

use crate::fanout::{discard, discard_after, write_data};
use crate::path::ApiPath;
use crate::{headers, Gateway};

/// Highest part number.
pub const MAX_PART: u32 = 9999;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    object_path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct CommitBody {
    #[serde(default)]
    parts: Vec<String>,
}

fn parts_dir(account: &str, id: &str) -> String {
    format!("/{account}/uploads/{}/{id}", &id[..3])
}

async fn json_body<T: for<'de> Deserialize<'de>>(body: Incoming) -> Result<T, ApiError> {
    let idle = std::time::Duration::from_secs(60);
    let bytes = mobula_http::collect_body(body, 1 << 20, idle).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Code::InvalidArgument, format!("bad JSON body: {e}")))
}

/// Route any request below `/:account/uploads/`.
pub async fn route(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    body: Incoming,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let rest: Vec<&str> = path.parts[2..].iter().map(String::as_str).collect();
    match (&parts.method, rest.as_slice()) {
        (&Method::POST, []) => create(gw, path.account(), body).await,
        (m, [prefix, id, tail @ ..]) if valid_id(id) && id.starts_with(prefix) => {
            let upload = gw
                .meta
                .upload(id)
                .await?
                .filter(|u| u.account == path.account())
                .ok_or_else(|| {
                    ApiError::new(
                        Code::ResourceNotFound,
                        format!("upload {id} does not exist"),
                    )
                })?;
            match (m, tail) {
                (&Method::GET, ["state"]) => Ok(state(&upload)),
                (&Method::POST, ["commit"]) => {
                    let c: CommitBody = json_body(body).await?;
                    commit(gw, &upload, c.parts).await
                }
                (&Method::POST, ["abort"]) => {
                    gw.meta.abort_upload(id).await?;
                    Ok(mobula_http::status(StatusCode::NO_CONTENT))
                }
                (&Method::PUT, [n]) => {
                    let n: u32 = n.parse().ok().filter(|n| *n <= MAX_PART).ok_or_else(|| {
                        ApiError::new(
                            Code::InvalidArgument,
                            format!("part number must be 0 to {MAX_PART}"),
                        )
                    })?;
                    put_part(gw, &upload, n, parts, body).await
                }
                _ => Err(ApiError::new(
                    Code::MethodNotAllowed,
                    "not an upload operation",
                )),
            }
        }
        _ => Err(ApiError::new(
            Code::ResourceNotFound,
            format!("{} is not an upload", path.full()),
        )),
    }
}

async fn create(
    gw: &Arc<Gateway>,
    account: &str,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let c: CreateBody = json_body(body).await?;
    let target = ApiPath::parse(&c.object_path)?;
    let object = matches!(target.area(), Some("stor" | "public")) && target.depth() >= 3
        || target.bucket_key().is_some();
    if target.account() != account || !object {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "objectPath must be an object path under the account's /stor, /public or a bucket",
        ));
    }
    let h = to_header_map(&c.headers)?;
    let durability = headers::durability(&h)?;
    let (content_type, stored) = headers::stored(&h)?;
    let nodes = gw.nodes.place(durability, 0)?;
    let id = new_id();
    let u = Upload {
        id: id.clone(),
        account: account.to_string(),
        object_path: target.full(),
        content_type,
        headers: stored,
        durability,
        nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        state: "created".into(),
        created: now_ms(),
        committed_parts: None,
        parts: Vec::new(),
    };
    gw.meta.create_upload(&u).await?;
    let dir = parts_dir(account, &id);
    let mut r = mobula_http::json(
        StatusCode::CREATED,
        &json!({"id": id, "partsDirectory": dir}),
    );
    if let Ok(v) = dir.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

fn to_header_map(m: &BTreeMap<String, String>) -> Result<http::HeaderMap, ApiError> {
    let mut h = http::HeaderMap::new();
    for (k, v) in m {
        let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| ApiError::new(Code::InvalidArgument, format!("bad header name {k}")))?;
        let value = http::HeaderValue::from_str(v).map_err(|_| {
            ApiError::new(Code::InvalidArgument, format!("bad header value for {k}"))
        })?;
        h.insert(name, value);
    }
    Ok(h)
}

fn state(u: &Upload) -> Response<Body> {
    let (state, result) = match u.state.as_str() {
        "done" => ("done", Some("committed")),
        "aborted" => ("done", Some("aborted")),
        _ => ("created", None),
    };
    let mut v = json!({
        "id": u.id,
        "state": state,
        "partsDirectory": parts_dir(&u.account, &u.id),
        "targetObject": u.object_path,
        "headers": u.headers,
        "numCopies": u.durability,
        "creationTimeMs": u.created,
        "parts": u.parts.iter().map(|p| json!({"n": p.n, "etag": p.data.id, "size": p.data.size})).collect::<Vec<_>>(),
    });
    if let Some(r) = result {
        v["result"] = json!(r);
    }
    if let Some(p) = &u.committed_parts {
        v["partsCommitted"] = json!(p);
    }
    mobula_http::json(StatusCode::OK, &v)
}

pub(crate) fn targets(gw: &Gateway, u: &Upload) -> Result<Vec<(String, String)>, ApiError> {
    u.nodes
        .iter()
        .map(|n| {
            gw.nodes.url(n).map(|url| (n.clone(), url)).ok_or_else(|| {
                ApiError::new(
                    Code::ServiceUnavailable,
                    format!("storage node {n} is gone"),
                )
            })
        })
        .collect()
}

async fn put_part(
    gw: &Arc<Gateway>,
    u: &Upload,
    n: u32,
    parts: http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    if u.state != "created" {
        return Err(ApiError::new(
            Code::InvalidUpdate,
            format!("upload is {}", u.state),
        ));
    }
    let content_md5 = headers::content_md5(&parts.headers)?;
    let data = write_data(gw, &targets(gw, u)?, u.durability, body, content_md5, false).await?;
    let p = PutPart {
        upload_id: u.id.clone(),
        n,
        data: data.clone(),
        link: false,
    };
    if let Err(e) = gw.meta.put_part(&p).await {
        discard_after(gw, &e, &data.id, &data.nodes).await;
        return Err(e);
    }
    let mut r = mobula_http::status(StatusCode::NO_CONTENT);
    if let Ok(v) = data.id.parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

fn committed(u: &Upload, etag: &str) -> Response<Body> {
    let mut r = mobula_http::status(StatusCode::CREATED);
    if let Ok(v) = u.object_path.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = etag.parse() {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

async fn commit(
    gw: &Arc<Gateway>,
    u: &Upload,
    etags: Vec<String>,
) -> Result<Response<Body>, ApiError> {
    let etags: Vec<String> = etags
        .iter()
        .map(|e| e.trim_matches('"').to_string())
        .collect();
    if u.state == "done" {
        if u.committed_parts.as_ref() == Some(&etags) {
            let etag = gw
                .meta
                .get(&u.object_path)
                .await?
                .and_then(|e| e.data)
                .map(|d| d.id);
            return Ok(committed(u, &etag.unwrap_or_default()));
        }
        return Err(ApiError::new(
            Code::InvalidUpdate,
            "upload was already committed with other parts",
        ));
    }
    if u.state != "created" {
        return Err(ApiError::new(
            Code::InvalidUpdate,
            format!("upload is {}", u.state),
        ));
    }
    let mut ids = Vec::new();
    for (i, etag) in etags.iter().enumerate() {
        let part = u.parts.iter().find(|p| p.n as usize == i).ok_or_else(|| {
            ApiError::new(Code::InvalidArgument, format!("part {i} was not uploaded"))
        })?;
        if &part.data.id != etag {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("part {i} has etag {}, not {etag}", part.data.id),
            ));
        }
        if i + 1 < etags.len() && part.data.size < gw.cfg.min_part_size {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!(
                    "part {i} is {} bytes; all parts but the last need {}",
                    part.data.size, gw.cfg.min_part_size
                ),
            ));
        }
        ids.push(part.data.id.clone());
    }
    let e = concat_and_commit(gw, u, ids, etags, Headers::new(), Preconditions::default()).await?;
    let etag = e.data.map(|d| d.id).unwrap_or_default();
    Ok(committed(u, &etag))
}

/// Concatenate the parts `ids` on every node of the upload into new data, then commit it as
/// the upload's object (with `headers` added and `preconditions` checked in the same
/// transaction), recording `record` as the parts it was committed with. On any failure the new
/// data is reclaimed and nothing is visible.
pub(crate) async fn concat_and_commit(
    gw: &Arc<Gateway>,
    u: &Upload,
    ids: Vec<String>,
    record: Vec<String>,
    headers: Headers,
    preconditions: Preconditions,
) -> Result<Entry, ApiError> {
    let targets = targets(gw, u)?;
    let id = new_id();
    let results = futures::future::join_all(
        targets
            .iter()
            .map(|(_, url)| gw.data.concat(url, &id, ids.clone())),
    )
    .await;
    let nodes: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
    let mut written = None;
    for r in results {
        match r {
            Ok(w)
                if written
                    .as_ref()
                    .is_none_or(|p: &mobula_storage_node::api::Written| {
                        p.md5 == w.md5 && p.size == w.size
                    }) =>
            {
                written = Some(w)
            }
            Ok(_) => {
                discard(gw, &id, &nodes).await;
                return Err(ApiError::internal(
                    "copies of the parts differ between nodes",
                ));
            }
            Err(e) => {
                discard(gw, &id, &nodes).await;
                return Err(e.into());
            }
        }
    }
    let w = written.ok_or_else(|| ApiError::internal("upload has no nodes"))?;
    let data = Data {
        id: id.clone(),
        size: w.size,
        md5: w.md5,
        blake3: w.blake3,
        durability: u.durability,
        nodes: nodes.clone(),
    };
    let c = CommitUpload {
        upload_id: u.id.clone(),
        parts: record,
        data,
        headers,
        preconditions,
    };
    match gw.meta.commit_upload(&c).await {
        Ok(e) => Ok(e),
        Err(e) => {
            discard_after(gw, &e, &id, &nodes).await;
            Err(e)
        }
    }
}

#[cfg(test)]
#[path = "uploads_tests.rs"]
mod tests;
