//! A node's writes of new copies: a body streamed into a [`Writer`] on a blocking thread (the
//! runtime only moves buffers), checked, committed (fsync'd) — and a small body gathered whole
//! first and written, checked and committed on one blocking call.
//!
//! Invariant: what [`store_stream`] returns is durable; on any error nothing is left (an
//! uncommitted writer's unnamed file vanishes when dropped).

use futures::StreamExt;
use mobula_http::{ApiError, Code};
use tokio::sync::mpsc;

use crate::api::Written;
use crate::server::{blocking, io_err};
use crate::store::{Committed, Pending, Store, Writer};

/// Stream `body` into a new writer for `id` on a blocking thread (which writes and hashes; the
/// runtime only moves buffers). The first body error is returned as is; dropping the returned
/// writer without committing discards the unnamed file.
pub(crate) async fn write_stream<S>(
    store: &Store,
    id: &str,
    md5: bool,
    mut body: S,
) -> Result<Writer, ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, ApiError>> + Unpin,
{
    let mut w = {
        let (s, id) = (store.clone(), id.to_string());
        blocking(move || s.writer(&id, md5)).await?
    };
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Writer> {
        while let Some(b) = rx.blocking_recv() {
            w.write(&b)?;
        }
        Ok(w)
    });
    let mut failed = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    break; // the writer failed: its error is below
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let w = writer.await.map_err(ApiError::internal)?.map_err(io_err)?;
    match failed {
        Some(e) => Err(e),
        None => Ok(w),
    }
}

/// Bodies up to this size are gathered in memory, then written, checked and committed on one
/// blocking call: a small PUT's copy costs one hand-off to the blocking pool instead of three
/// (open, a writer thread fed through a channel, commit).
pub const WRITE_AT_ONCE: usize = 64 << 10;

/// A node's PUT of `id` (over HTTP, or from the gateway of its own process): write `body`,
/// check it against `expected_md5`, commit (fsync'd). What this returns is acknowledged. The
/// body's first error is returned as is.
pub(crate) async fn store_stream<S>(
    store: &Store,
    id: &str,
    mut body: S,
    expected_md5: Option<String>,
) -> Result<Written, ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, ApiError>> + Unpin,
{
    let mut head = Vec::new();
    let mut held = 0;
    let whole = loop {
        match body.next().await {
            None => break true,
            Some(Err(e)) => return Err(e),
            Some(Ok(b)) => {
                held += b.len();
                head.push(b);
                if held > WRITE_AT_ONCE {
                    break false;
                }
            }
        }
    };
    let (s, i, md5) = (store.clone(), id.to_string(), expected_md5.is_some());
    let committed = if whole {
        blocking(move || -> std::io::Result<Result<Committed, ApiError>> {
            let mut w = s.writer_sized(&i, md5, held)?;
            for b in &head {
                w.write(b)?;
            }
            match check_md5(w, expected_md5) {
                Ok(w) => w.commit(&i).map(Ok),
                Err(e) => Ok(Err(e)),
            }
        })
        .await?
    } else {
        let rest = futures::stream::iter(head.into_iter().map(Ok)).chain(body);
        let w = check_md5(write_stream(store, id, md5, rest).await?, expected_md5)?;
        Ok(blocking(move || w.commit(&i)).await?)
    };
    let c = committed?;
    fail::fail_point!("put-before-ack", |_| Err(ApiError::internal("failpoint")));
    Ok(written(c))
}

/// Write the whole small body `chunks` as `id` into each of `stores` on this one blocking
/// call: every copy linked first ([`Writer::link`]) and its writeback started, then each
/// fsync'd — copies on one file system find their names in the journal commit the first
/// fsync waits for, where copies written on threads of their own each wait for one. One result
/// per store; a copy that failed leaves nothing (an unlinked file, or its name removed).
pub(crate) fn store_together(
    stores: &[Store],
    id: &str,
    chunks: &[bytes::Bytes],
) -> Vec<Result<Written, ApiError>> {
    let linked = stores.iter().map(|s| link_copy(s, id, chunks)).collect();
    let answers = sync_linked(linked).into_iter().map(|c| {
        let c = c.map_err(io_err)?;
        fail::fail_point!("put-before-ack", |_| Err(ApiError::internal("failpoint")));
        Ok(written(c))
    });
    answers.collect()
}

/// A new copy of `chunks` as `id` in `store`, linked and awaiting its fsync.
fn link_copy(store: &Store, id: &str, chunks: &[bytes::Bytes]) -> std::io::Result<Pending> {
    let len = chunks.iter().map(|b| b.len()).sum();
    let mut w = store.writer_sized(id, false, len)?;
    for b in chunks {
        w.write(b)?;
    }
    w.link(id)
}

/// Start every linked copy's writeback, then fsync each: copies on one journal find their names
/// in the commit the first fsync waits for.
fn sync_linked(linked: Vec<std::io::Result<Pending>>) -> Vec<std::io::Result<Committed>> {
    for p in linked.iter().flatten() {
        p.start_writeback();
    }
    let synced = linked.into_iter().map(|p| p.and_then(Pending::sync));
    synced.collect()
}

/// Commit `w` as `id` in its store, and write its bytes — `whole`, all of them, kept by the
/// caller while writing — as `id` into each of `peers`, on this one blocking call, as
/// `store_together` does for a small PUT: a job agent's task output and its peers' copies made
/// durable by one journal commit instead of one each, after a fetch over HTTP each. The own
/// copy's result first, then one per peer; a peer's copy that does not match the own copy's
/// size and blake3 is removed and answered as an error. Nothing is written to a peer when the
/// own copy cannot be linked; a copy that fails leaves nothing.
pub fn commit_with_copies(
    w: Writer,
    id: &str,
    whole: &[bytes::Bytes],
    peers: &[Store],
) -> (std::io::Result<Committed>, Vec<std::io::Result<Committed>>) {
    let own = match w.link(id) {
        Ok(p) => p,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut linked = vec![Ok(own)];
    linked.extend(peers.iter().map(|s| link_copy(s, id, whole)));
    let mut synced = sync_linked(linked).into_iter();
    let own = synced
        .next()
        .unwrap_or_else(|| Err(std::io::Error::other("no own copy")));
    let copies = synced.zip(peers).map(|(c, store)| match (c, &own) {
        (Ok(c), Ok(o)) if c.size != o.size || c.blake3 != o.blake3 => {
            let _ = store.delete(id);
            Err(std::io::Error::other(format!(
                "the copy of {id} differs from its source"
            )))
        }
        (c, _) => c,
    });
    let copies = copies.collect();
    (own, copies)
}

/// A node's answer for a committed copy.
fn written(c: Committed) -> Written {
    Written {
        size: c.size,
        md5: c.md5.unwrap_or_default(),
        blake3: c.blake3,
    }
}

/// `w` if its MD5 is what the client said (or nothing was said).
fn check_md5(w: Writer, expected: Option<String>) -> Result<Writer, ApiError> {
    match (expected, w.md5()) {
        (Some(want), Some(got)) if want != got => Err(ApiError::new(
            Code::ContentMD5Mismatch,
            format!("content-md5 {want} does not match computed {got}"),
        )),
        _ => Ok(w),
    }
}
