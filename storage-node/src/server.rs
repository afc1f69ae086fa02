//! The storage node's HTTP API (internal; only the gateway and peers call it).
//!
//! - `PUT /data/:id` — stream a body into a new durable file. `x-expected-md5` (base64), when
//!   given, is checked before the file becomes visible. Answers `{"size"}` only once durable.
//! - `GET /data/:id` — stream a file; `Range: bytes=a-b` for one range (206).
//! - `DELETE /data/:id` — remove a file (idempotent).
//! - `POST /data/:id/concat` `{"parts":[ids]}` — build a file from parts (multipart commit).
//! - `GET /status`, `GET /ping`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use md5::Digest;
use mobula_http::{ApiError, Body, Code, Request};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;

use crate::store::{valid_id, Store};

/// Answer of a write: what is now durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub size: u64,
    /// Base64 MD5 (concat only; empty for a plain PUT).
    #[serde(default)]
    pub md5: String,
    /// Hex blake3 (concat only).
    #[serde(default)]
    pub blake3: String,
}

/// Body of `POST /data/:id/concat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Concat {
    pub parts: Vec<String>,
}

/// Answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Serve the node API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    store: Store,
    node_id: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let state = Arc::new((store, node_id));
    mobula_http::serve(
        listener,
        move |req| {
            let state = state.clone();
            async move {
                match route(&state.0, &state.1, req).await {
                    Ok(r) => r,
                    Err(e) => {
                        if e.code == Code::InternalError {
                            tracing::error!("storage node: {e}");
                        }
                        e.into_response()
                    }
                }
            }
        },
        shutdown,
        Duration::from_secs(5),
    )
    .await
}

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::internal(format!("storage: {e}"))
}

async fn route(store: &Store, node_id: &str, req: Request) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["ping"]) => Ok(mobula_http::status(StatusCode::OK)),
        (Method::GET, ["status"]) => {
            let (free_bytes, total_bytes) = store.space();
            Ok(mobula_http::json(
                StatusCode::OK,
                &Status {
                    id: node_id.to_string(),
                    free_bytes,
                    total_bytes,
                },
            ))
        }
        (m, ["data", id, rest @ ..]) if valid_id(id) => {
            let id = id.to_string();
            match (m, rest) {
                (Method::PUT, []) => put(store, &id, req).await,
                (Method::GET, []) => get(store, &id, req.headers()).await,
                (Method::DELETE, []) => {
                    store.delete(&id).await.map_err(io_err)?;
                    Ok(mobula_http::status(StatusCode::NO_CONTENT))
                }
                (Method::POST, ["concat"]) => {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))?
                        .to_bytes();
                    let c: Concat = serde_json::from_slice(&body)
                        .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))?;
                    concat(store, &id, &c).await
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

async fn put(store: &Store, id: &str, req: Request) -> Result<Response<Body>, ApiError> {
    let expected_md5 = req
        .headers()
        .get("x-expected-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut md5 = expected_md5.as_ref().map(|_| md5::Md5::new());
    let mut tmp = store.create_temp(id).await.map_err(io_err)?;
    let mut out = BufWriter::with_capacity(1 << 20, &mut tmp.file);
    let mut body = req.into_body();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::new(Code::InvalidArgument, format!("body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if let Some(h) = md5.as_mut() {
                h.update(&data);
            }
            size += data.len() as u64;
            out.write_all(&data).await.map_err(io_err)?;
        }
    }
    out.flush().await.map_err(io_err)?;
    drop(out);
    if let (Some(h), Some(want)) = (md5, expected_md5) {
        let got = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        if got != want {
            return Err(ApiError::new(
                Code::ContentMD5Mismatch,
                format!("content-md5 {want} does not match computed {got}"),
            ));
        }
    }
    store.commit(tmp, id).await.map_err(io_err)?;
    Ok(mobula_http::json(
        StatusCode::CREATED,
        &Written {
            size,
            md5: String::new(),
            blake3: String::new(),
        },
    ))
}

/// Parse `bytes=a-b` (the only form the gateway sends).
fn parse_range(headers: &HeaderMap, len: u64) -> Option<(u64, u64)> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len.checked_sub(1)?
    } else {
        b.parse().ok()?
    };
    (a <= b && b < len).then_some((a, b))
}

async fn get(store: &Store, id: &str, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let mut file = match tokio::fs::File::open(store.path(id)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                Code::ResourceNotFound,
                format!("no data {id}"),
            ))
        }
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().await.map_err(io_err)?.len();
    let (status, start, count) = match parse_range(headers, len) {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None if headers.contains_key(header::RANGE) && len > 0 => {
            return Err(ApiError::new(
                Code::RequestedRangeNotSatisfiable,
                "range not satisfiable",
            ))
        }
        None => (StatusCode::OK, 0, len),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(io_err)?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 256 << 10);
    let mut resp = Response::new(mobula_http::stream(stream));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, count.into());
    resp.headers_mut().insert("x-data-size", len.into());
    Ok(resp)
}

async fn concat(store: &Store, id: &str, c: &Concat) -> Result<Response<Body>, ApiError> {
    if c.parts.iter().any(|p| !valid_id(p)) {
        return Err(ApiError::new(Code::InvalidArgument, "bad part id"));
    }
    let tmp = store.create_temp(id).await.map_err(io_err)?;
    let paths: Vec<_> = c.parts.iter().map(|p| store.path(p)).collect();
    let std_file = tmp.file.try_clone().await.map_err(io_err)?.into_std().await;
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String, String)> {
        use std::io::{Read, Write};
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std_file);
        let mut md5 = md5::Md5::new();
        let mut b3 = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        for p in paths {
            let mut f = std::fs::File::open(&p)?;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                b3.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
        }
        out.flush()?;
        Ok((
            size,
            base64::engine::general_purpose::STANDARD.encode(md5.finalize()),
            b3.finalize().to_hex().to_string(),
        ))
    })
    .await
    .map_err(ApiError::internal)?;
    let (size, md5, blake3) = match hashed {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                Code::ResourceNotFound,
                "a part is missing on this node",
            ))
        }
        Err(e) => return Err(io_err(e)),
    };
    store.commit(tmp, id).await.map_err(io_err)?;
    Ok(mobula_http::json(
        StatusCode::CREATED,
        &Written { size, md5, blake3 },
    ))
}
