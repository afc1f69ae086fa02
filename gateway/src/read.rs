//! Object reads: `GET`/`HEAD` with one `Range`, conditional requests, and failover between
//! copies — also in the middle of a body: when a copy fails mid-stream, the rest is read from
//! the next copy at the same offset, so the client sees one uninterrupted body. When no copy
//! is left the body is aborted (the connection is reset), never completed short.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, Method, Response, StatusCode};
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{Data, Entry, Kind};

use crate::path::ApiPath;
use crate::{dirs, headers, Gateway};

type ByteStream = mobula_storage_node::DataStream;

/// Parse a `Range` header against an object of `len` bytes: `Ok(None)` without one, the
/// inclusive range, or 416/501.
pub fn parse_range(h: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = h.get(header::RANGE) else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            Code::RequestedRangeNotSatisfiable,
            format!("range {v:?} cannot be satisfied for {len} bytes"),
        )
    };
    let v = v.to_str().map_err(|_| unsatisfiable())?.trim();
    let spec = v.strip_prefix("bytes=").ok_or_else(unsatisfiable)?;
    if spec.contains(',') {
        // Several ranges: each must be well formed (else 416, like any malformed range);
        // only then is the request one Mobula does not implement.
        let well_formed = |r: &str| {
            r.trim().split_once('-').is_some_and(|(a, b)| {
                let (a, b) = (a.trim(), b.trim());
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
                (a.is_empty() && digits(b)) || (digits(a) && (b.is_empty() || digits(b)))
            })
        };
        if !spec.split(',').all(well_formed) {
            return Err(unsatisfiable());
        }
        return Err(ApiError::new(
            Code::NotImplemented,
            "multiple ranges are not supported",
        ));
    }
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().map_err(|_| unsatisfiable());
    let range = if a.is_empty() {
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Err(unsatisfiable());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start = num(a)?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            num(b)?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Err(unsatisfiable());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Content types worth compressing on the wire.
pub fn compressible(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    t.starts_with("text/")
        || t.ends_with("+json")
        || t.ends_with("+xml")
        || matches!(
            t.as_str(),
            "application/json"
                | "application/x-ndjson"
                | "application/x-json-stream"
                | "application/xml"
                | "application/javascript"
                | "application/csv"
                | "application/x-yaml"
                | "application/yaml"
        )
}

/// `GET`/`HEAD` of any path below an area.
pub async fn get_or_head(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let full = path.full();
    let entry =
        gw.meta.get(&full).await?.ok_or_else(|| {
            ApiError::new(Code::ResourceNotFound, format!("{full} does not exist"))
        })?;
    if entry.kind == Kind::Directory {
        return dirs::respond(gw, parts, &entry).await;
    }
    object(gw, parts, &entry).await
}

async fn object(
    gw: &Arc<Gateway>,
    parts: &http::request::Parts,
    entry: &Entry,
) -> Result<Response<Body>, ApiError> {
    let data = entry
        .data
        .clone()
        .ok_or_else(|| ApiError::internal("object without data"))?;
    if headers::check_read(&parts.headers, entry)? {
        let mut r = mobula_http::status(StatusCode::NOT_MODIFIED);
        headers::object(r.headers_mut(), entry);
        r.headers_mut().remove(header::CONTENT_TYPE);
        return Ok(r);
    }
    let range = match parse_range(&parts.headers, data.size) {
        Err(e) if e.code == Code::RequestedRangeNotSatisfiable => {
            let mut r = e.into_response();
            if let Ok(v) = format!("bytes */{}", data.size).parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        other => other?,
    };
    let (start, end) = range.unwrap_or((0, data.size.saturating_sub(1)));
    let count = if data.size == 0 { 0 } else { end - start + 1 };
    let zstd = range.is_none()
        && count >= 1024
        && compressible(&entry.content_type)
        && !entry.headers.contains_key("content-encoding")
        && mobula_http::zstd::accepts_zstd(&parts.headers);
    if parts.method == Method::HEAD || count == 0 {
        let mut resp = mobula_http::status(StatusCode::OK);
        headers::object(resp.headers_mut(), entry);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, count.into());
        return Ok(resp);
    }
    let order = gw.nodes.read_order(&data.nodes);
    let first = open(gw, &data.id, data.size, order, start, end).await?;
    let body = failover_stream(
        gw.clone(),
        data.id.clone(),
        data.size,
        first,
        start,
        end + 1,
    );
    if zstd {
        let plain = body.map(|r| r.map_err(std::io::Error::other));
        let mut r = Response::new(mobula_http::stream(mobula_http::zstd::zstd_stream(plain)));
        headers::object(r.headers_mut(), entry);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_ENCODING,
            http::HeaderValue::from_static("zstd"),
        );
        h.insert(
            header::VARY,
            http::HeaderValue::from_static("accept-encoding"),
        );
        return Ok(r);
    }
    let mut resp = Response::new(mobula_http::stream(body));
    headers::object(resp.headers_mut(), entry);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, count.into());
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = format!("bytes {start}-{end}/{}", data.size).parse() {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// Bytes `start..=end` of `data` from the first copy that answers, continuing on the next copy
/// whenever one fails mid-stream (the S3 listener's GET).
pub(crate) async fn data_stream(
    gw: &Arc<Gateway>,
    data: &Data,
    start: u64,
    end: u64,
) -> Result<impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static, ApiError> {
    let order = gw.nodes.read_order(&data.nodes);
    let first = open(gw, &data.id, data.size, order, start, end).await?;
    Ok(failover_stream(
        gw.clone(),
        data.id.clone(),
        data.size,
        first,
        start,
        end + 1,
    ))
}

/// A copy being read: which of the ordered holders it is, and its byte stream.
struct Open {
    index: usize,
    order: Vec<(String, String)>,
    stream: ByteStream,
}

/// Open the first copy (in `order`) that answers for bytes `start..=end`.
async fn open(
    gw: &Gateway,
    id: &str,
    size: u64,
    order: Vec<(String, String)>,
    start: u64,
    end: u64,
) -> Result<Open, ApiError> {
    let range = (start != 0 || end + 1 != size).then_some((start, end));
    for (index, (node, url)) in order.iter().enumerate() {
        match gw.data.open(url, id, range).await {
            Ok(mut opened) => {
                if opened.size != Some(size) {
                    tracing::warn!(
                        "copy of {id} on {node} has the wrong size {:?}",
                        opened.size
                    );
                    continue;
                }
                // The first piece is read before a copy is chosen: one failing at once (its
                // first block bad) is passed over like one that does not answer, so an object
                // bad on every copy is refused (503) before its head, not cut after it.
                let stream: ByteStream = match opened.stream.next().await {
                    Some(Ok(first)) => {
                        let first = futures::stream::once(async move { Ok(first) });
                        Box::pin(first.chain(opened.stream))
                    }
                    None => opened.stream,
                    // The node answered: its copy is bad (it reports that itself), not the
                    // node, which stays in use.
                    Some(Err(e)) => {
                        tracing::warn!("copy of {id} on {node} failed at byte {start}: {e}");
                        continue;
                    }
                };
                return Ok(Open {
                    index,
                    stream,
                    order,
                });
            }
            Err(e) => {
                if e.is_node_fault() {
                    gw.nodes.mark_failed(node);
                }
                tracing::warn!("copy of {id} on {node} unavailable: {e}");
            }
        }
    }
    Err(ApiError::new(
        Code::ServiceUnavailable,
        format!("no copy of data {id} can be read now"),
    ))
}

/// Bytes `pos..end` of data `id`, continuing on the next copy whenever one fails.
fn failover_stream(
    gw: Arc<Gateway>,
    id: String,
    size: u64,
    first: Open,
    pos: u64,
    end: u64,
) -> impl Stream<Item = Result<Bytes, ApiError>> + Send {
    futures::stream::unfold((Some(first), pos), move |(mut cur, mut pos)| {
        let gw = gw.clone();
        let id = id.clone();
        async move {
            loop {
                if pos >= end {
                    return None;
                }
                let copy = cur.as_mut()?;
                match copy.stream.next().await {
                    Some(Ok(b)) if !b.is_empty() => {
                        pos += b.len() as u64;
                        return Some((Ok(b), (cur, pos)));
                    }
                    Some(Ok(_)) => continue,
                    failed => {
                        let (node, _) = copy.order[copy.index].clone();
                        gw.nodes.mark_failed(&node);
                        tracing::warn!("copy of {id} on {node} failed at byte {pos}: {failed:?}");
                        // Try the remaining copies, in order, without the one that failed.
                        let mut order = copy.order.clone();
                        order.remove(copy.index);
                        match open(&gw, &id, size, order, pos, end - 1).await {
                            Ok(o) => cur = Some(o),
                            Err(e) => return Some((Err(e), (None, pos))),
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
