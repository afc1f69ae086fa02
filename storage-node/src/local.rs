//! Nodes that run in the gateway's own process (`mobula up`, the test cluster): the gateway
//! reads and writes their copies straight through the node's [`Store`] instead of a loopback
//! HTTP exchange that copies every byte twice more — reads with the same verified block reader
//! and report of bad copies to the node's quarantine as `GET /data/:id`, writes with the same
//! code as `PUT /data/:id` (written on a blocking thread, MD5 checked, fsync'd and committed
//! before the answer). Deletes and concatenations, rare and small, still go over HTTP.
//!
//! The node's extension (the job agent) is reached the same way: [`LocalNodes::extension`]
//! hands in-process callers its handle instead of a `/tasks/` request.
//!
//! Invariant: a node is in [`LocalNodes`] exactly while its `run` future is alive (the
//! registration is dropped with it), so a stopped node's copies are reached over HTTP and fail
//! over as any unreachable node's do; a read already streaming from a node that stops breaks
//! at its next block, as its connection would; a call to its extension in flight ends when
//! [`InProcess::stopped`] resolves.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::StreamExt;
use mobula_http::{ApiError, Code};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use crate::api::{valid_id, Written};
use crate::client::{NodeClient, NodeError, UploadAborted};
use crate::data_path::{BodyStream, DataNodes, Opened};
use crate::store::Store;

/// A node's store and where it reports copies found bad.
#[derive(Clone)]
struct Local {
    store: Store,
    bad: UnboundedSender<String>,
    /// False once the node stopped.
    alive: Arc<AtomicBool>,
    /// Its extension's handle for callers in this process ([`crate::Extension::local`]).
    ext: Option<Arc<dyn Any + Send + Sync>>,
    /// Closed when the node stops (its sender lives in [`Registered`]).
    stop: watch::Receiver<()>,
}

/// A local node's extension (the job agent) as callers in this process reach it: its handle,
/// and the node's end — a call in flight when the node stops must fail as its dropped
/// connection would have.
pub struct InProcess {
    pub handle: Arc<dyn Any + Send + Sync>,
    stop: watch::Receiver<()>,
}

impl InProcess {
    /// Resolves once the node has stopped (at once if it already has).
    pub async fn stopped(&mut self) {
        while self.stop.changed().await.is_ok() {}
    }
}

/// The nodes running in this process, by the URL they registered with.
#[derive(Clone, Default)]
pub struct LocalNodes(Arc<RwLock<HashMap<String, Local>>>);

impl std::fmt::Debug for LocalNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        f.debug_tuple("LocalNodes")
            .field(&map.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A node's place in [`LocalNodes`], given up when dropped.
pub(crate) struct Registered {
    nodes: LocalNodes,
    url: String,
    alive: Arc<AtomicBool>,
    /// Dropped with the registration: every [`InProcess::stopped`] resolves.
    _stop: watch::Sender<()>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        let mut map = self.nodes.0.write().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.url);
    }
}

impl LocalNodes {
    pub(crate) fn register(
        &self,
        url: &str,
        store: Store,
        bad: UnboundedSender<String>,
    ) -> Registered {
        let alive = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop) = watch::channel(());
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let local = Local {
            store,
            bad,
            alive: alive.clone(),
            ext: None,
            stop,
        };
        map.insert(url.to_string(), local);
        Registered {
            nodes: self.clone(),
            url: url.to_string(),
            alive,
            _stop: stop_tx,
        }
    }

    /// Give the registered node at `url` its extension's handle for in-process callers.
    pub(crate) fn set_extension(&self, url: &str, handle: Arc<dyn Any + Send + Sync>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get_mut(url) {
            l.ext = Some(handle);
        }
    }

    /// The extension of the node at `url`, when that node runs in this process now and has
    /// one.
    pub fn extension(&self, url: &str) -> Option<InProcess> {
        let l = self.get(url)?;
        Some(InProcess {
            handle: l.ext?,
            stop: l.stop,
        })
    }

    fn get(&self, url: &str) -> Option<Local> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(url).cloned()
    }

    /// Whether the node at `url` runs in this process now.
    pub fn contains(&self, url: &str) -> bool {
        self.get(url).is_some()
    }
}

/// The gateway's data path when some nodes may run in its process: reads from those go to
/// their stores, everything else to [`NodeClient`].
#[derive(Debug)]
pub struct LocalFirst {
    http: NodeClient,
    local: LocalNodes,
}

impl LocalFirst {
    pub fn new(local: LocalNodes) -> LocalFirst {
        LocalFirst {
            http: NodeClient::new(),
            local,
        }
    }
}

/// Ranges up to this size are read whole on the one blocking call that also finds the copy's
/// size: a small GET costs one hand-off to the blocking pool instead of a stat, a reader
/// thread and a channel (the hand-offs were most of a 4 KiB GET's server time).
const READ_AT_ONCE: u64 = 64 << 10;

/// How an open found the copy.
enum Start {
    /// The range does not fit the copy.
    BadRange,
    /// A small range, read and verified whole (or why not).
    Read(std::io::Result<bytes::Bytes>),
    /// Bytes `start..end`, to stream block by block.
    Stream(u64, u64),
}

/// Open `id` (the inclusive `range`, or all of it) in a local node's store, answering as
/// `GET /data/:id` would: its errors as the node's, a failed block as a broken stream (and the
/// copy reported bad).
async fn open(l: Local, id: &str, range: Option<(u64, u64)>) -> Result<Opened, NodeError> {
    if !valid_id(id) {
        let e = ApiError::new(Code::InvalidArgument, "bad data id");
        return Err(NodeError::Answered(e));
    }
    // A small copy wholly in the kernel's caches is read right here, without a hand-off.
    if l.alive.load(Ordering::SeqCst) {
        if let Some((size, bytes)) = l.store.read_cached(id, range) {
            // An empty range sends no bytes at all, as a streamed one does.
            let item = (!bytes.is_empty()).then_some(Ok(bytes));
            return Ok(Opened {
                size: Some(size),
                stream: Box::pin(futures::stream::iter(item)),
            });
        }
    }
    let (s, i) = (l.store.clone(), id.to_string());
    let (size, start) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Start)> {
        let size = s.size(&i)?;
        let Some((start, end)) = crate::cached::span(range, size) else {
            return Ok((size, Start::BadRange));
        };
        if end - start > READ_AT_ONCE {
            return Ok((size, Start::Stream(start, end)));
        }
        // Mostly one block's chunk, passed on as it is; a range across a block boundary joins two.
        let read = s.reader(&i, start, end).and_then(|mut r| r.read_all());
        Ok((size, Start::Read(read)))
    })
    .await
    .map_err(|e| NodeError::Answered(ApiError::internal(e)))?
    .map_err(|e| NodeError::Answered(crate::server::io_err(e)))?;
    let verified: std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<_>> + Send>> =
        match start {
            Start::BadRange => {
                let e = ApiError::new(Code::RequestedRangeNotSatisfiable, "range not satisfiable");
                return Err(NodeError::Answered(e));
            }
            Start::Read(read) => {
                crate::server::report_bad(id, &read, Some(&l.bad));
                // An empty range sends no bytes at all, as a streamed one does.
                let item = match read {
                    Ok(b) if b.is_empty() => None,
                    other => Some(other),
                };
                Box::pin(futures::stream::iter(item))
            }
            Start::Stream(start, end) => Box::pin(crate::server::verified_stream(
                &l.store,
                id,
                start,
                end,
                Some(l.bad),
            )),
        };
    let (what, alive) = (id.to_string(), l.alive);
    let stream = verified.map(move |r| match r {
        // Stopped while reading: as a broken connection would.
        _ if !alive.load(Ordering::SeqCst) => {
            Err(NodeError::Unreachable("the storage node stopped".into()))
        }
        Ok(b) => Ok(b),
        Err(e) => Err(NodeError::Unreachable(format!("reading {what}: {e}"))),
    });
    Ok(Opened {
        size: Some(size),
        stream: Box::pin(stream),
    })
}

/// Write `body` as `id` into a local node's store, answering as `PUT /data/:id` would: the
/// caller's own abort is `Aborted`, another failure of its body or the node stopping midway
/// `Unreachable` (a broken connection), the node's own errors `Answered`.
async fn put(
    l: Local,
    id: &str,
    body: BodyStream,
    expected_md5: Option<&str>,
) -> Result<Written, NodeError> {
    if !valid_id(id) {
        let e = ApiError::new(Code::InvalidArgument, "bad data id");
        return Err(NodeError::Answered(e));
    }
    let cause: Arc<std::sync::Mutex<Option<NodeError>>> = Arc::default();
    let (why, alive) = (cause.clone(), l.alive.clone());
    let body = body.map(move |r| {
        let broke = match r {
            _ if !alive.load(Ordering::SeqCst) => {
                NodeError::Unreachable("the storage node stopped".into())
            }
            Ok(b) => return Ok(b),
            Err(e) if e.get_ref().is_some_and(|i| i.is::<UploadAborted>()) => NodeError::Aborted,
            Err(e) => NodeError::Unreachable(format!("the body failed: {e}")),
        };
        let message = broke.to_string();
        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(broke);
        Err(ApiError::new(Code::InvalidArgument, message))
    });
    let done = crate::write::store_stream(&l.store, id, body, expected_md5.map(str::to_string));
    let written = done.await;
    let broke = cause.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (written, broke) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(NodeError::Answered(e)),
        (Ok(_), None) if !l.alive.load(Ordering::SeqCst) => {
            Err(NodeError::Unreachable("the storage node stopped".into()))
        }
        (Ok(w), None) => Ok(w),
    }
}

impl LocalNodes {
    /// The nodes of `urls` when every one runs in this process now on a volume of `journal`
    /// ([`crate::volume::Volume::shared_journal`]; the first node's when `None`) — where
    /// copies linked first and fsync'd one after another on one thread are made durable by one
    /// journal commit.
    fn on_one_journal(&self, urls: &[String], journal: Option<u64>) -> Option<Vec<Local>> {
        let nodes: Vec<Local> = urls
            .iter()
            .map(|u| self.get(u).filter(|l| l.alive.load(Ordering::SeqCst)))
            .collect::<Option<_>>()?;
        let journal = match journal {
            Some(j) => j,
            None => nodes.first()?.store.volume().shared_journal()?,
        };
        nodes
            .iter()
            .all(|l| l.store.volume().shared_journal() == Some(journal))
            .then_some(nodes)
    }

    /// For a job agent in this process: the stores of the nodes at `urls` when every one runs
    /// here now on the journal `own`'s volume is on — copies a
    /// [`crate::commit_with_copies`] can make durable with `own`'s in one journal commit.
    pub fn sharing_journal(&self, own: &Store, urls: &[String]) -> Option<Vec<Store>> {
        let journal = own.volume().shared_journal()?;
        let nodes = self.on_one_journal(urls, Some(journal))?;
        Some(nodes.into_iter().map(|l| l.store).collect())
    }
}

impl LocalFirst {
    /// The nodes of `urls` when all run in this process on one journal.
    fn together(&self, urls: &[String]) -> Option<Vec<Local>> {
        self.local.on_one_journal(urls, None)
    }
}

/// [`crate::write::store_together`] into the stores of `nodes`, answering for each as
/// [`put`] would.
async fn put_together(
    nodes: Vec<Local>,
    id: String,
    chunks: Vec<bytes::Bytes>,
) -> Vec<Result<Written, NodeError>> {
    let stores: Vec<Store> = nodes.iter().map(|l| l.store.clone()).collect();
    let done =
        tokio::task::spawn_blocking(move || crate::write::store_together(&stores, &id, &chunks))
            .await;
    let results = match done {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::internal(e);
            return nodes
                .iter()
                .map(|_| Err(NodeError::Answered(e.clone())))
                .collect();
        }
    };
    results
        .into_iter()
        .zip(nodes)
        .map(|(r, l)| match r {
            _ if !l.alive.load(Ordering::SeqCst) => {
                Err(NodeError::Unreachable("the storage node stopped".into()))
            }
            Ok(w) => Ok(w),
            Err(e) => Err(NodeError::Answered(e)),
        })
        .collect()
}

impl DataNodes for LocalFirst {
    fn can_put_together(&self, urls: &[String]) -> bool {
        self.together(urls).is_some()
    }

    fn put_together(
        &self,
        urls: &[String],
        id: &str,
        chunks: Vec<bytes::Bytes>,
    ) -> Option<BoxFuture<'static, Vec<Result<Written, NodeError>>>> {
        let nodes = self.together(urls)?;
        if !valid_id(id) {
            return None;
        }
        Some(Box::pin(put_together(nodes, id.to_string(), chunks)))
    }

    fn put<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        body: BodyStream,
        expected_md5: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        match self.local.get(url) {
            Some(l) => Box::pin(put(l, id, body, expected_md5)),
            None => DataNodes::put(&self.http, url, id, body, expected_md5),
        }
    }

    fn open<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<Opened, NodeError>> {
        match self.local.get(url) {
            Some(l) => Box::pin(open(l, id, range)),
            None => DataNodes::open(&self.http, url, id, range),
        }
    }

    fn delete<'a>(&'a self, url: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), NodeError>> {
        DataNodes::delete(&self.http, url, id)
    }

    fn concat<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        parts: Vec<String>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        DataNodes::concat(&self.http, url, id, parts)
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "local_together_tests.rs"]
mod together_tests;
