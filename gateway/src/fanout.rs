//! The streaming write of one body to several storage nodes at once (object PUTs and multipart
//! parts), and the discarding of data that will never be committed.
//!
//! The body is read once: each chunk is hashed (MD5 and blake3) and handed to one bounded
//! channel per copy, so the slowest node paces the client and no object is held in memory.
//!
//! Whose failure it is decides what follows, and the types say it ([`Failure`]):
//! - **the client's** (it went away, stalled, sent a broken body, too many bytes, a wrong
//!   `Content-MD5`): every copy is aborted with [`UploadAborted`]; no node is blamed.
//! - **a node's** ([`NodeError::is_node_fault`]): the node is avoided for a while. While the
//!   body's prefix is still held ([`Replay`]: until every copy has started taking the body and
//!   at most [`REPLAY_LIMIT`] bytes — so a small object's whole body), the copy is placed again
//!   on another healthy node and the prefix replayed to it, so one dead node does not fail the
//!   PUT. Past that (a node failing mid-body of a large object), that PUT fails alone.
//!
//! Nothing is acknowledged unless every copy answered that it is durable with the same size and
//! blake3; on failure every copy is queued for reclamation.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use md5::Digest;
use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Data, Garbage};
use mobula_storage_node::api::new_id;
use mobula_storage_node::api::Written;
use mobula_storage_node::{NodeError, UploadAborted};
use tokio::task::JoinHandle;

use crate::{together, Gateway};

/// Body prefix kept for placing a copy again, once every copy has started taking the body.
pub const REPLAY_LIMIT: u64 = 1 << 20;
/// Hard bound on the prefix while some copy has not started (its node not yet connected).
const REPLAY_MAX: u64 = 8 << 20;

/// Why a fan-out write failed: the client's doing, or a node's.
#[derive(Debug)]
pub enum Failure {
    /// The client (or what it sent) failed; no node is at fault.
    Client(ApiError),
    /// A node failed and the copy could not be placed again.
    Node(ApiError),
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        match f {
            Failure::Client(e) => e,
            Failure::Node(e) if e.code == Code::ServiceUnavailable => ApiError::new(
                Code::ServiceUnavailable,
                format!("storage node failure, nothing was stored: {}", e.message),
            ),
            Failure::Node(e) => e,
        }
    }
}

/// One copy being written: its node, its channel and its request.
struct Copy {
    node: String,
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    started: Arc<AtomicBool>,
    task: JoinHandle<Result<Written, NodeError>>,
    /// Its answer was taken already (the copy failed during the feed).
    answered: bool,
}

/// The body's prefix, while a copy may still need it replayed.
#[derive(Default)]
struct Replay {
    chunks: Vec<Bytes>,
    bytes: u64,
}

fn open(gw: &Gateway, node: &str, url: &str, id: &str, md5: Option<&str>) -> Copy {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    // The first poll of the body means the node is connected and taking it.
    let body = futures::stream::poll_fn(move |cx| {
        flag.store(true, Ordering::Relaxed);
        rx.poll_next_unpin(cx)
    });
    let data = gw.data.clone();
    let (url, id, md5) = (url.to_string(), id.to_string(), md5.map(String::from));
    let put = async move { data.put(&url, &id, Box::pin(body), md5.as_deref()).await };
    // The copy's task serves the same client request: it carries its id to the node.
    let task = match mobula_http::reqid::current() {
        Some(rid) => tokio::spawn(mobula_http::reqid::scope(rid, put)),
        None => tokio::spawn(put),
    };
    Copy {
        node: node.to_string(),
        tx: Some(tx),
        started,
        task,
        answered: false,
    }
}

async fn outcome(c: &mut Copy) -> Result<Written, NodeError> {
    debug_assert!(!c.answered);
    c.answered = true;
    (&mut c.task)
        .await
        .unwrap_or_else(|e| Err(NodeError::Unreachable(format!("copy task: {e}"))))
}

/// Place copy `i` again on a healthy node not yet used by this write, replaying `prefix`.
async fn replace(
    gw: &Gateway,
    copies: &mut [Copy],
    tried: &mut Vec<String>,
    i: usize,
    id: &str,
    md5: Option<&str>,
    prefix: &Replay,
) -> bool {
    let Ok(mut picked) = gw.nodes.place_excluding(1, prefix.bytes, tried) else {
        return false;
    };
    let Some((node, url)) = picked.pop() else {
        return false;
    };
    tracing::info!(
        "copy of {id} on {} failed before its body: placed again on {node}",
        copies[i].node
    );
    tried.push(node.clone());
    let mut c = open(gw, &node, &url, id, md5);
    if let Some(tx) = c.tx.as_mut() {
        for b in &prefix.chunks {
            if tx.send(Ok(b.clone())).await.is_err() {
                break;
            }
        }
    }
    copies[i] = c;
    true
}

/// Write `body` as new data to `targets` (node id, url). With `replace`, a copy whose node fails
/// while the body's prefix is held is placed again on another node; without (multipart parts,
/// pinned to their upload's nodes) it fails the write. Returns the data once durable everywhere.
/// A small body to nodes of this process is written to all of them on one call
/// ([`crate::together`]), and streamed only should that fail.
pub async fn write_data<B>(
    gw: &Gateway,
    targets: &[(String, String)],
    durability: u8,
    mut body: B,
    content_md5: Option<String>,
    may_replace: bool,
) -> Result<Data, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let urls: Vec<String> = targets.iter().map(|(_, u)| u.clone()).collect();
    if !together::applies(gw, body.size_hint().exact(), &urls) {
        return stream_data(gw, targets, durability, body, content_md5, may_replace).await;
    }
    let chunks = together::read_whole(gw, &mut body).await?;
    let md5 = content_md5.as_deref();
    if let Some(data) = together::write(gw, targets, &urls, durability, &chunks, md5).await? {
        return Ok(data);
    }
    let frames = chunks
        .into_iter()
        .map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)));
    let replayed = http_body_util::StreamBody::new(futures::stream::iter(frames));
    stream_data(gw, targets, durability, replayed, content_md5, may_replace).await
}

/// [`write_data`]'s streaming path: one task and channel per copy.
async fn stream_data<B>(
    gw: &Gateway,
    targets: &[(String, String)],
    durability: u8,
    mut body: B,
    content_md5: Option<String>,
    may_replace: bool,
) -> Result<Data, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let id = new_id();
    let md5_hdr = content_md5.as_deref();
    let mut tried: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
    let mut copies: Vec<Copy> = targets
        .iter()
        .map(|(n, u)| open(gw, n, u, &id, md5_hdr))
        .collect();
    let mut replay = may_replace.then(Replay::default);
    let mut md5 = md5::Md5::new();
    let mut b3 = blake3::Hasher::new();
    let mut size = 0u64;
    let mut failure: Option<Failure> = None;
    'feed: loop {
        let data = match next_data(gw, &mut body).await {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(e) => {
                failure = Some(Failure::Client(e));
                break;
            }
        };
        size += data.len() as u64;
        if size > gw.cfg.max_object_size {
            failure = Some(Failure::Client(ApiError::new(
                Code::MaxContentLengthExceeded,
                format!("objects are at most {} bytes", gw.cfg.max_object_size),
            )));
            break;
        }
        md5.update(&data);
        b3.update(&data);
        if let Some(r) = replay.as_mut() {
            r.chunks.push(data.clone());
            r.bytes += data.len() as u64;
        }
        for i in 0..copies.len() {
            let Some(tx) = copies[i].tx.as_mut() else {
                continue;
            };
            if tx.send(Ok(data.clone())).await.is_ok() {
                continue;
            }
            // That copy's request ended early: its node failed, or refused the request.
            copies[i].tx = None;
            let err = outcome(&mut copies[i]).await.err();
            let node_fault = err.as_ref().is_none_or(NodeError::is_node_fault);
            if node_fault {
                gw.nodes.mark_failed(&copies[i].node);
            }
            let replaced = node_fault
                && match &replay {
                    Some(r) => replace(gw, &mut copies, &mut tried, i, &id, md5_hdr, r).await,
                    None => false,
                };
            if !replaced {
                let e = err.map(ApiError::from).unwrap_or_else(|| {
                    ApiError::new(Code::ServiceUnavailable, "a storage node failed")
                });
                failure = Some(Failure::Node(e));
                break 'feed;
            }
        }
        // Keep the prefix only while a copy may still need it.
        let all_started = copies.iter().all(|c| c.started.load(Ordering::Relaxed));
        if replay
            .as_ref()
            .is_some_and(|r| r.bytes > REPLAY_MAX || (all_started && r.bytes > REPLAY_LIMIT))
        {
            replay = None;
        }
    }
    for c in copies.iter_mut() {
        if let Some(mut tx) = c.tx.take() {
            if failure.is_some() {
                let _ = tx.send(Err(io::Error::other(UploadAborted))).await;
            }
        }
    }
    let computed = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    let blake3 = b3.finalize().to_hex().to_string();
    if failure.is_none() {
        if let Some(want) = &content_md5 {
            if *want != computed {
                failure = Some(Failure::Client(md5_mismatch(want, &computed)));
            }
        }
    }
    // Collect every copy's answer; a node that failed on its own may be replaced (the whole
    // body is still held when it is small).
    let mut node_errors: Vec<ApiError> = Vec::new();
    let mut i = 0;
    while i < copies.len() {
        if copies[i].answered {
            i += 1; // failed during the feed: already the write's failure
            continue;
        }
        let r = outcome(&mut copies[i]).await;
        let node = copies[i].node.clone();
        match r {
            Ok(w) if w.size == size && w.blake3 == blake3 => {}
            Ok(w) if w.size == size => node_errors.push(ApiError::internal(format!(
                "node {node} received different bytes (blake3 {})",
                w.blake3
            ))),
            Ok(w) => node_errors.push(ApiError::internal(format!(
                "node {node} stored {} bytes of {size}",
                w.size
            ))),
            Err(e) if failure.is_some() => {
                // Aborted by us: the node is not at fault, whatever it said.
                tracing::debug!("copy of {id} on {node} aborted: {e}");
            }
            Err(e) => {
                if e.is_node_fault() {
                    gw.nodes.mark_failed(&node);
                    let whole = replay.as_ref().filter(|r| r.bytes == size);
                    if let Some(r) = whole {
                        if replace(gw, &mut copies, &mut tried, i, &id, md5_hdr, r).await {
                            copies[i].tx = None; // the whole body is in: end it
                            continue; // collect the new copy's answer
                        }
                    }
                }
                node_errors.push(e.into());
            }
        }
        i += 1;
    }
    let failure = failure.or_else(|| {
        // Prefer a client-meaningful code (e.g. ContentMD5Mismatch) over a generic one.
        node_errors
            .iter()
            .find(|e| e.code != Code::InternalError)
            .or(node_errors.first())
            .cloned()
            .map(Failure::Node)
    });
    let nodes: Vec<String> = copies.iter().map(|c| c.node.clone()).collect();
    if let Some(f) = failure {
        // Every node this write touched, replaced ones included.
        discard(gw, &id, &tried).await;
        return Err(f.into());
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

/// The client's `Content-MD5` `want` is not the body's, `computed`.
pub(crate) fn md5_mismatch(want: &str, computed: &str) -> ApiError {
    ApiError::new(
        Code::ContentMD5Mismatch,
        format!("content-md5 {want} does not match computed {computed}"),
    )
}

/// The body's next data (other frames skipped), awaited under the write's upload timeout; the
/// client's failure when it stalls or breaks.
pub(crate) async fn next_data<B>(gw: &Gateway, body: &mut B) -> Result<Option<Bytes>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        match tokio::time::timeout(gw.cfg.upload_timeout, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    Code::UploadTimeout,
                    format!("no data received for {:?}", gw.cfg.upload_timeout),
                ))
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("reading request body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => {
                if let Ok(data) = f.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// After a metadata write that referred to data `id` failed with `err`: queue the data for
/// deletion from `nodes` — unless the service may have committed the write after all (no
/// answer came back: [`mobula_metadata::client::outcome_unknown`]); then the data stays, and
/// the nodes' orphan sweep deletes it later only if the service does not know it.
pub async fn discard_after(gw: &Gateway, err: &ApiError, id: &str, nodes: &[String]) {
    if mobula_metadata::client::outcome_unknown(err) {
        tracing::warn!("{id}: the metadata write's outcome is unknown ({err}); data kept");
        return;
    }
    discard(gw, id, nodes).await
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
                let _ = gw.data.delete(&url, id).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
