//! Nodes that run in the gateway's own process (`mobula up`, the test cluster): the gateway
//! reads their copies straight from the node's [`Store`] — the same verified block reader and
//! the same report of bad copies to the node's quarantine as `GET /data/:id` — instead of a
//! loopback HTTP exchange that copies every byte twice more. Writes, deletes and
//! concatenations still go over HTTP, so each node keeps its own fsync and commit rules.
//!
//! Invariant: a node is in [`LocalNodes`] exactly while its `run` future is alive (the
//! registration is dropped with it), so a stopped node's copies are reached over HTTP and fail
//! over as any unreachable node's do; a read already streaming from a node that stops breaks
//! at its next block, as its connection would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::StreamExt;
use mobula_http::{ApiError, Code};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{valid_id, Written};
use crate::client::{NodeClient, NodeError};
use crate::data_path::{BodyStream, DataNodes, Opened};
use crate::store::Store;

/// A node's store and where it reports copies found bad.
#[derive(Clone)]
struct Local {
    store: Store,
    bad: UnboundedSender<String>,
    /// False once the node stopped.
    alive: Arc<AtomicBool>,
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
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let local = Local {
            store,
            bad,
            alive: alive.clone(),
        };
        map.insert(url.to_string(), local);
        Registered {
            nodes: self.clone(),
            url: url.to_string(),
            alive,
        }
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

/// Open `id` (the inclusive `range`, or all of it) in a local node's store, answering as
/// `GET /data/:id` would: its errors as the node's, a failed block as a broken stream.
async fn open(l: Local, id: &str, range: Option<(u64, u64)>) -> Result<Opened, NodeError> {
    if !valid_id(id) {
        let e = ApiError::new(Code::InvalidArgument, "bad data id");
        return Err(NodeError::Answered(e));
    }
    let (s, i) = (l.store.clone(), id.to_string());
    let size = tokio::task::spawn_blocking(move || s.size(&i))
        .await
        .map_err(|e| NodeError::Answered(ApiError::internal(e)))?
        .map_err(|e| NodeError::Answered(crate::server::io_err(e)))?;
    let (start, end) = match range {
        None => (0, size),
        Some((a, b)) if a <= b && b < size => (a, b + 1),
        Some(_) => {
            let e = ApiError::new(Code::RequestedRangeNotSatisfiable, "range not satisfiable");
            return Err(NodeError::Answered(e));
        }
    };
    let what = id.to_string();
    let alive = l.alive;
    let stream = crate::server::verified_stream(&l.store, id, start, end, Some(l.bad)).map(
        move |r| match r {
            _ if !alive.load(Ordering::SeqCst) => {
                Err(NodeError::Unreachable("the storage node stopped".into()))
            }
            Ok(b) => Ok(b),
            Err(e) => Err(NodeError::Unreachable(format!("reading {what}: {e}"))),
        },
    );
    Ok(Opened {
        size: Some(size),
        stream: Box::pin(stream),
    })
}

impl DataNodes for LocalFirst {
    fn put<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        body: BodyStream,
        expected_md5: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        DataNodes::put(&self.http, url, id, body, expected_md5)
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
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use futures::TryStreamExt;

    use super::*;

    /// Nothing listens here: whatever answers for this URL answered from the store.
    const NOWHERE: &str = "http://127.0.0.1:9";

    fn stored(store: &Store, bytes: &[u8]) -> String {
        let id = crate::api::new_id();
        let mut w = store.writer(&id, false).unwrap();
        w.write(bytes).unwrap();
        w.commit(&id).unwrap();
        id
    }

    async fn read(data: &LocalFirst, id: &str, range: Option<(u64, u64)>) -> Vec<u8> {
        let opened = data.open(NOWHERE, id, range).await.unwrap();
        let chunks: Vec<bytes::Bytes> = opened.stream.try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn reads_come_from_the_store_of_a_node_in_this_process_and_stop_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let id = stored(&store, &bytes);
        let local = LocalNodes::default();
        let data = LocalFirst::new(local.clone());
        let (bad_tx, mut bad_rx) = tokio::sync::mpsc::unbounded_channel();
        let registered = local.register(NOWHERE, store.clone(), bad_tx);
        assert!(local.contains(NOWHERE));

        let opened = data.open(NOWHERE, &id, None).await.unwrap();
        assert_eq!(opened.size, Some(bytes.len() as u64));
        drop(opened);
        assert_eq!(read(&data, &id, None).await, bytes);
        let (a, b) = ((1 << 20) - 3, (2 << 20) + 9);
        assert_eq!(
            read(&data, &id, Some((a, b))).await,
            &bytes[a as usize..=b as usize]
        );

        // The node's own errors, as GET /data/:id gives them.
        let past = bytes.len() as u64;
        let e = data
            .open(NOWHERE, &id, Some((past, past + 1)))
            .await
            .err()
            .unwrap();
        assert_eq!(
            e.answered().unwrap().code,
            Code::RequestedRangeNotSatisfiable
        );
        let e = data
            .open(NOWHERE, &crate::api::new_id(), None)
            .await
            .err()
            .unwrap();
        assert_eq!(e.answered().unwrap().code, Code::ResourceNotFound);
        assert!(!e.is_node_fault());

        // A flipped byte in the second block: the first block is served, then the stream
        // breaks (the gateway goes on from another copy) and the node hears of the bad copy.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(store.path(&id))
            .unwrap();
        f.seek(SeekFrom::Start((1 << 20) + 7)).unwrap();
        f.write_all(&[bytes[(1 << 20) + 7] ^ 1]).unwrap();
        drop(f);
        let mut stream = data.open(NOWHERE, &id, None).await.unwrap().stream;
        let first = stream.try_next().await.unwrap().unwrap();
        assert_eq!(&first[..], &bytes[..first.len()]);
        let mut broke = None;
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                broke = Some(e);
                break;
            }
        }
        assert!(
            broke.is_some_and(|e| e.is_node_fault()),
            "the bad block is never served"
        );
        assert_eq!(bad_rx.recv().await.as_deref(), Some(id.as_str()));

        // Once the node stops, its URL is just a URL: nothing answers there, and a read that
        // was streaming from it breaks at its next block.
        let id = stored(&store, &bytes);
        let mut streaming = data.open(NOWHERE, &id, None).await.unwrap().stream;
        assert!(streaming.try_next().await.unwrap().is_some());
        drop(registered);
        let mut stopped = false;
        while let Some(r) = streaming.next().await {
            if r.is_err() {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "a read from a stopped node breaks");
        assert!(!local.contains(NOWHERE));
        let e = data.open(NOWHERE, &id, None).await.err().unwrap();
        assert!(matches!(e, NodeError::Unreachable(_)), "{e}");
    }
}
