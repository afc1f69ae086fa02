//! The storage node's HTTP API (internal; only the gateway and peers call it).
//!
//! - `PUT /data/:id` — stream a body into a new durable file. `x-expected-md5` (base64), when
//!   given, is checked before the file becomes visible. Answers `{"size"}` only once durable.
//! - `GET /data/:id` — stream a file; `Range: bytes=a-b` for one range (206).
//! - `DELETE /data/:id` — remove a file (idempotent).
//! - `POST /data/:id/concat` `{"parts":[ids]}` — build a file from parts (multipart commit).
//! - `GET|POST /snapshots`, `DELETE /snapshots/:name` — volume snapshots.
//! - `POST /scrub` — verify every data file now; `GET /quarantine` — copies found bad.
//! - `GET /status`, `GET /ping`.
//! - `/tasks/...` — the job agent, when the node runs one ([`crate::Extension`]).
//!
//! A read that finds a bad block aborts its response (the gateway continues from another copy)
//! and reports the id on the node's `bad` channel, which quarantines the copy and tells metadata.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use mobula_http::{ApiError, Body, Code, Request};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::{valid_id, Concat, Fetch, NewSnapshot, Status, Written};
use crate::store::{Store, Writer};
use mobula_http::zstd::{accepts_zstd, zstd_stream};

/// Smallest data sent zstd-compressed to a peer that asks for it.
const ZSTD_MIN: u64 = 64 << 10;

/// Shared state of the node's server.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub store: Store,
    pub id: String,
    /// Ids of copies found bad while serving them.
    pub bad: mpsc::UnboundedSender<String>,
    /// The metadata service (scrub asks it which copies this node should hold).
    pub meta: Option<mobula_metadata::MetadataClient>,
    /// Where `/tasks/...` goes (the job agent).
    pub extension: Option<crate::Extension>,
    /// The client fetches from peers go through (its pool keeps each peer's connection open).
    pub peers: crate::NodeClient,
}

/// Serve the node API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    state: NodeState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = Arc::new(state);
    let limits = mobula_http::Limits {
        api: Some("node"),
        ..Default::default()
    };
    mobula_http::serve_with(
        listener,
        None,
        move |req| {
            let state = state.clone();
            async move {
                let started = std::time::Instant::now();
                let op = op_name(req.method(), req.uri().path());
                let rid = mobula_http::reqid::from_headers(req.headers());
                let serve = async {
                    let r = match route(&state, req).await {
                        Ok(r) => r,
                        Err(e) => {
                            if e.code == Code::InternalError {
                                tracing::error!("storage node: {e}");
                            }
                            e.into_response()
                        }
                    };
                    tracing::debug!("node {op}: {}", r.status());
                    r
                };
                let resp = match rid {
                    Some(id) => mobula_http::reqid::scope(id, serve).await,
                    None => serve.await,
                };
                mobula_http::telemetry::request("node", op, resp.status(), started);
                resp
            }
        },
        shutdown,
        Duration::from_secs(5),
        limits,
    )
    .await
}

/// The operation of a request to the node API, for its metrics (a closed set of names).
fn op_name(m: &Method, path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (m.as_str(), parts.as_slice()) {
        (_, ["tasks", ..]) => "Tasks",
        ("GET", ["ping"]) => "Ping",
        ("GET", ["status"]) => "Status",
        (_, ["snapshots", ..]) => "Snapshots",
        ("POST", ["scrub"]) => "Scrub",
        ("GET", ["quarantine"]) => "Quarantine",
        ("PUT", ["data", _]) => "PutData",
        ("GET", ["data", _]) => "GetData",
        ("DELETE", ["data", _]) => "DeleteData",
        ("POST", ["data", _, "fetch"]) => "FetchData",
        ("POST", ["data", _, "concat"]) => "ConcatData",
        _ => "Other",
    }
}

pub(crate) fn io_err(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::new(Code::ResourceNotFound, e.to_string()),
        std::io::ErrorKind::AlreadyExists => ApiError::new(Code::InvalidUpdate, e.to_string()),
        std::io::ErrorKind::InvalidInput => ApiError::new(Code::InvalidArgument, e.to_string()),
        _ => ApiError::internal(format!("storage: {e}")),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(io_err)
}

async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))
}

async fn route(node: &NodeState, req: Request) -> Result<Response<Body>, ApiError> {
    let store = &node.store;
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (_, ["tasks", ..]) => match &node.extension {
            Some(ext) => Ok((ext.handler)(req).await),
            None => Err(ApiError::new(
                Code::ResourceNotFound,
                "this node runs no job agent",
            )),
        },
        (Method::GET, ["ping"]) => Ok(mobula_http::status(StatusCode::OK)),
        (Method::GET, ["status"]) => {
            let (free_bytes, total_bytes) = store.space();
            Ok(mobula_http::json(
                StatusCode::OK,
                &Status {
                    id: node.id.clone(),
                    volume: store.volume().kind().to_string(),
                    free_bytes,
                    total_bytes,
                },
            ))
        }
        (Method::GET, ["snapshots"]) => {
            let s = store.clone();
            let list = blocking(move || s.volume().snapshot_list()).await?;
            Ok(mobula_http::json(StatusCode::OK, &list))
        }
        (Method::POST, ["snapshots"]) => {
            let n: NewSnapshot = json_body(req).await?;
            let s = store.clone();
            let snap = blocking(move || s.volume().snapshot_create(&n.name)).await?;
            Ok(mobula_http::json(StatusCode::CREATED, &snap))
        }
        (Method::DELETE, ["snapshots", name]) => {
            let (s, name) = (store.clone(), name.to_string());
            blocking(move || s.volume().snapshot_delete(&name)).await?;
            Ok(mobula_http::status(StatusCode::NO_CONTENT))
        }
        (Method::POST, ["scrub"]) => {
            let mut report = crate::scrub::scrub(store, &node.bad, None)
                .await
                .map_err(io_err)?;
            if let Some(meta) = &node.meta {
                report.missing = crate::scrub::find_missing(store, &node.id, meta).await?;
                for id in &report.missing {
                    let _ = node.bad.send(id.clone());
                }
            }
            Ok(mobula_http::json(StatusCode::OK, &report))
        }
        (Method::GET, ["quarantine"]) => {
            let s = store.clone();
            let q = blocking(move || s.quarantined()).await?;
            Ok(mobula_http::json(StatusCode::OK, &q))
        }
        (m, ["data", id, rest @ ..]) if valid_id(id) => {
            let id = id.to_string();
            match (m, rest) {
                (Method::PUT, []) => put(store, &id, req).await,
                (Method::GET, []) => get(node, &id, req.headers()).await,
                (Method::DELETE, []) => {
                    let s = store.clone();
                    blocking(move || s.delete(&id)).await?;
                    Ok(mobula_http::status(StatusCode::NO_CONTENT))
                }
                (Method::POST, ["fetch"]) => {
                    let f: Fetch = json_body(req).await?;
                    fetch(store, &node.peers, &id, f).await
                }
                (Method::POST, ["concat"]) => {
                    let c: Concat = json_body(req).await?;
                    concat(store, &id, c).await
                }
                _ => Err(ApiError::new(Code::MethodNotAllowed, "method not allowed")),
            }
        }
        _ => Err(ApiError::new(
            Code::ResourceNotFound,
            format!("no route {path}"),
        )),
    }
}

/// Commit `w` as `id` and answer what is now durable.
async fn commit(w: Writer, id: &str) -> Result<Response<Body>, ApiError> {
    let id = id.to_string();
    let c = blocking(move || w.commit(&id)).await?;
    Ok(written(c))
}

fn written(c: crate::store::Committed) -> Response<Body> {
    mobula_http::json(
        StatusCode::CREATED,
        &Written {
            size: c.size,
            md5: c.md5.unwrap_or_default(),
            blake3: c.blake3,
        },
    )
}

async fn put(store: &Store, id: &str, req: Request) -> Result<Response<Body>, ApiError> {
    use futures::TryStreamExt;
    let expected_md5 = req
        .headers()
        .get("x-expected-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| ApiError::new(Code::InvalidArgument, format!("body: {e}")));
    let w = crate::write::store_stream(store, id, body, expected_md5).await?;
    Ok(mobula_http::json(StatusCode::CREATED, &w))
}

/// Parse `bytes=a-b` (the only form the gateway sends) into `start..end` (exclusive).
fn parse_range(headers: &HeaderMap, len: u64) -> Option<(u64, u64)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len.checked_sub(1)?
    } else {
        b.parse().ok()?
    };
    (a <= b && b < len).then_some((a, b + 1))
}

/// Stream `start..end` of `id`, verified block by block on a blocking thread.
pub fn verified_stream(
    store: &Store,
    id: &str,
    start: u64,
    end: u64,
    bad: Option<mpsc::UnboundedSender<String>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    let (store, id) = (store.clone(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let mut r = match store.reader(&id, start, end) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        while let Some(chunk) = r.next_chunk() {
            let failed = chunk.is_err();
            report_bad(&id, &chunk, bad.as_ref());
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// A read of `id` that failed verification is logged and reported to the node's quarantine
/// (`bad`); other outcomes pass untouched.
pub(crate) fn report_bad<T>(
    id: &str,
    read: &std::io::Result<T>,
    bad: Option<&mpsc::UnboundedSender<String>>,
) {
    if read
        .as_ref()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
    {
        tracing::error!("data {id} failed verification on this node");
        if let Some(b) = bad {
            let _ = b.send(id.to_string());
        }
    }
}

async fn get(node: &NodeState, id: &str, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let store = &node.store;
    // A small copy wholly in the kernel's caches is answered right here, without a hand-off
    // (a peer asking for zstd takes the path below, which decides whether to compress).
    if !headers.contains_key(header::RANGE) && !accepts_zstd(headers) {
        if let Some((len, bytes)) = store.read_cached(id, None) {
            let mut resp = Response::new(mobula_http::full(bytes));
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, len.into());
            resp.headers_mut().insert("x-data-size", len.into());
            return Ok(resp);
        }
    }
    let len = {
        let (s, id) = (store.clone(), id.to_string());
        blocking(move || s.size(&id)).await?
    };
    let (status, start, end) = match parse_range(headers, len) {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None if headers.contains_key(header::RANGE) && len > 0 => {
            return Err(ApiError::new(
                Code::RequestedRangeNotSatisfiable,
                "range not satisfiable",
            ))
        }
        None => (StatusCode::OK, 0, len),
    };
    let stream = verified_stream(store, id, start, end, Some(node.bad.clone()));
    // Transfers between nodes (repair, replication) ask for zstd; below 64 KiB setting up a
    // compressor costs more than it saves.
    let mut resp = if accepts_zstd(headers) && status == StatusCode::OK && len >= ZSTD_MIN {
        let mut r = Response::new(mobula_http::stream(zstd_stream(stream)));
        r.headers_mut().insert(
            header::CONTENT_ENCODING,
            http::HeaderValue::from_static("zstd"),
        );
        r
    } else {
        let mut r = Response::new(mobula_http::stream(stream));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, (end - start).into());
        r
    };
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-data-size", len.into());
    Ok(resp)
}

async fn concat(store: &Store, id: &str, c: Concat) -> Result<Response<Body>, ApiError> {
    if c.parts.iter().any(|p| !valid_id(p)) {
        return Err(ApiError::new(Code::InvalidArgument, "bad part id"));
    }
    let (s, id) = (store.clone(), id.to_string());
    let committed = blocking(move || {
        let mut w = s.writer(&id, true)?;
        for p in &c.parts {
            let size = s.size(p)?;
            let mut r = s.reader(p, 0, size)?;
            while let Some(chunk) = r.next_chunk() {
                w.write(&chunk?)?;
            }
        }
        w.commit(&id)
    })
    .await?;
    Ok(written(committed))
}

/// Copy `id` from a peer: stream it in, check its blake3, commit. The peer verifies every block
/// before sending, and this node re-hashes what it received.
async fn fetch(
    store: &Store,
    peers: &crate::NodeClient,
    id: &str,
    f: Fetch,
) -> Result<Response<Body>, ApiError> {
    use futures::TryStreamExt;
    // A copy already here — say, an earlier fetch's whose answer was lost, so metadata never
    // counted it: kept when it verifies and is the same bytes (the fetch is idempotent), else
    // quarantined and fetched again. Without this, such a repair would fail forever.
    if store.path(id).exists() {
        let (s, i) = (store.clone(), id.to_string());
        match blocking(move || crate::scrub::verified_hash(&s, &i)).await {
            Ok(c) if c.blake3 == f.blake3 => return Ok(written(c)),
            _ => {
                let (s, i) = (store.clone(), id.to_string());
                blocking(move || s.quarantine(&i)).await?;
            }
        }
    }
    let resp = peers
        .get_zstd(&f.from, id)
        .await
        .map_err(|e| match e.is_node_fault() {
            true => ApiError::new(
                Code::ServiceUnavailable,
                format!("{}{}: {e}", crate::api::FROM_SOURCE, f.from),
            ),
            false => e.into(),
        })?;
    let compressed = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v == "zstd");
    let raw = resp.bytes_stream().map_err(std::io::Error::other);
    let body: futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> = if compressed {
        let dec = async_compression::tokio::bufread::ZstdDecoder::new(tokio::io::BufReader::new(
            tokio_util::io::StreamReader::new(raw),
        ));
        Box::pin(tokio_util::io::ReaderStream::with_capacity(dec, 256 << 10))
    } else {
        Box::pin(raw)
    };
    let from = f.from.clone();
    let body = body.map_err(move |e| {
        ApiError::new(
            Code::ServiceUnavailable,
            format!("{}{from}: {e}", crate::api::FROM_SOURCE),
        )
    });
    let w = crate::write::write_stream(store, id, true, body).await?;
    fail::fail_point!("repair-before-commit", |_| Err(ApiError::internal(
        "failpoint"
    )));
    // Check before the copy becomes visible.
    if w.blake3() != f.blake3 {
        return Err(ApiError::internal("fetched copy does not match its blake3"));
    }
    commit(w, id).await
}
