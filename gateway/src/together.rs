//! Small writes whose copies all go to nodes in this process (`mobula up`): the body is read
//! whole, then every copy is written, linked and fsync'd on one blocking call
//! ([`DataNodes::put_together`](mobula_storage_node::DataNodes::put_together)) instead of a
//! task, a channel and a blocking hand-off per copy, and copies on one file system share the
//! journal commit their fsyncs wait for.
//!
//! Nothing a client sees changes: the same checks (a wrong `Content-MD5` stores nothing), and
//! nothing acknowledged before every copy is durable with the same size and blake3. A copy
//! that fails sends the write down the streaming path ([`crate::fanout`]) with the body
//! replayed — where a failed node is avoided and its copy placed again, as for any write —
//! after what this path wrote is queued for reclamation.

use base64::Engine;
use bytes::Bytes;
use md5::Digest;
use mobula_http::ApiError;
use mobula_metadata::api::Data;
use mobula_storage_node::api::new_id;

use crate::fanout::{discard, md5_mismatch, next_data};
use crate::Gateway;

/// Bodies of at most this many bytes (by their `Content-Length`) may be written together.
pub const LIMIT: u64 = 64 << 10;

/// A body and its length, when known, declared as its exact size — for a body whose length is
/// known but not its own size hint (an S3 body: the request's decoded length).
pub struct Declared<B>(pub B, pub Option<u64>);

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Declared<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.1 {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => self.0.size_hint(),
        }
    }
}

/// Whether a body of `exact` bytes (when known) to `urls` is written together.
pub(crate) fn applies(gw: &Gateway, exact: Option<u64>, urls: &[String]) -> bool {
    exact.is_some_and(|n| n <= LIMIT.min(gw.cfg.max_object_size)) && gw.data.can_put_together(urls)
}

/// The whole body, read under the write's upload timeout ([`next_data`]); the streaming
/// feed's errors for a stalled or broken body. Nothing has been written when it fails.
pub(crate) async fn read_whole<B>(gw: &Gateway, body: &mut B) -> Result<Vec<Bytes>, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut chunks = Vec::new();
    while let Some(data) = next_data(gw, body).await? {
        chunks.push(data);
    }
    Ok(chunks)
}

/// Write `chunks` as new data to every node of `targets` (whose URLs are `urls`) at once. `Ok(None)` when a copy
/// failed or the nodes cannot be written together (nothing of this attempt is left: stream
/// instead); an error for the client's own (a wrong `Content-MD5`: nothing was written).
pub(crate) async fn write(
    gw: &Gateway,
    targets: &[(String, String)],
    urls: &[String],
    durability: u8,
    chunks: &[Bytes],
    content_md5: Option<&str>,
) -> Result<Option<Data>, ApiError> {
    let mut md5 = md5::Md5::new();
    let mut b3 = blake3::Hasher::new();
    let mut size = 0u64;
    for c in chunks {
        md5.update(c);
        b3.update(c);
        size += c.len() as u64;
    }
    let computed = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
    let blake3 = b3.finalize().to_hex().to_string();
    if let Some(want) = content_md5.filter(|w| *w != computed) {
        return Err(md5_mismatch(want, &computed));
    }
    let id = new_id();
    let Some(written) = gw.data.put_together(urls, &id, chunks.to_vec()) else {
        return Ok(None);
    };
    let answers = written.await;
    // One answer per copy, or none is trusted.
    let mut whole = answers.len() == targets.len();
    for ((node, _), answer) in targets.iter().zip(answers) {
        match answer {
            Ok(w) if w.size == size && w.blake3 == blake3 => continue,
            Ok(w) => tracing::warn!(
                "copy of {id} on {node}: {} bytes, blake3 {} (sent {size}, {blake3})",
                w.size,
                w.blake3
            ),
            Err(e) => {
                if e.is_node_fault() {
                    gw.nodes.mark_failed(node);
                }
                tracing::info!("copy of {id} on {node} failed: {e}; streaming instead");
            }
        }
        whole = false;
    }
    let nodes: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
    if !whole {
        discard(gw, &id, &nodes).await;
        return Ok(None);
    }
    Ok(Some(Data {
        id,
        size,
        md5: computed,
        blake3,
        durability,
        nodes,
    }))
}
