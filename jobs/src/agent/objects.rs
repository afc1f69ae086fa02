//! Storing what tasks emit: bytes go into a local [`Writer`] as they stream; storing makes
//! them durable here (fsync) and has a peer fetch a copy (until the default durability, or as
//! many healthy nodes as there are); committing then creates the object in the namespace (a
//! task's stdout is instead created by the coordinator, with the event that reports it).
//! Nothing is acknowledged before every copy is durable; a failed commit queues the copies
//! for reclamation. Also finds a local file for an object a task reads (the node's own copy, or a
//! fetched one when this node has none).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Data, Garbage, Headers, NodeInfo, PutObject};
use mobula_metadata::MetadataClient;
use mobula_storage_node::api::new_id;
use mobula_storage_node::Writer;
use mobula_storage_node::{commit_with_copies, LocalNodes, NodeClient, Store};
use rand::seq::SliceRandom;
use tokio::io::AsyncWriteExt;

use super::AgentConfig;

/// Copies of an output (as many as there are healthy nodes, up to this).
pub const DURABILITY: usize = 2;

pub(crate) struct Objects {
    node_id: String,
    url: String,
    dir: PathBuf,
    store: Store,
    pub meta: MetadataClient,
    nodes: NodeClient,
    /// The nodes running in this process, when the agent does — and when this node's volume
    /// shares its journal, so that [`commit_with_copies`] may apply (else outputs are not kept).
    local: Option<LocalNodes>,
    peers: tokio::sync::Mutex<(Option<Instant>, Vec<NodeInfo>)>,
}

/// Largest object a reducer is fed from memory ([`Objects::for_feed`]).
const FEED_AT_ONCE: u64 = 1 << 20;

/// An object's bytes for a reducer's stdin.
pub(crate) enum Feed {
    /// Small: read (or fetched) whole.
    Bytes(bytes::Bytes),
    /// Larger: a file to stream from.
    File(LocalFile),
}

/// A local file holding an object's bytes for a task, removed after it when fetched.
pub(crate) struct LocalFile {
    pub path: PathBuf,
    pub local: bool,
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if !self.local {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Outputs of up to this many bytes are also kept in memory while written, so that the peers'
/// copies are written from there on the call that commits the local one
/// ([`commit_with_copies`]).
pub(crate) const KEEP_WHOLE: usize = 64 << 10;

/// A task output being written: the local [`Writer`], and its bytes while there are no more
/// than [`KEEP_WHOLE`] (when the agent may write peers' copies from them at all).
#[derive(Debug)]
pub(crate) struct OutputFile {
    w: Writer,
    kept: Option<Vec<u8>>,
}

impl OutputFile {
    /// Append bytes.
    pub fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write(b)?;
        if let Some(k) = &mut self.kept {
            if k.len() + b.len() <= KEEP_WHOLE {
                k.extend_from_slice(b);
            } else {
                self.kept = None;
            }
        }
        Ok(())
    }
}

/// The request creating object `path` on `data` (content type from `headers`, else binary).
pub(crate) fn output(path: &str, parents: bool, data: &Data, mut headers: Headers) -> PutObject {
    let content_type = headers
        .remove("content-type")
        .unwrap_or_else(|| "application/octet-stream".into());
    PutObject {
        parents,
        path: path.to_string(),
        data: data.clone(),
        content_type,
        headers,
        preconditions: Default::default(),
    }
}

impl Objects {
    pub fn new(cfg: &AgentConfig, store: Store) -> Objects {
        let journal = store.volume().shared_journal();
        Objects {
            node_id: cfg.node_id.clone(),
            url: cfg.url.clone(),
            dir: cfg.node_dir.join("agent"),
            store,
            meta: MetadataClient::new(&cfg.metadata_url),
            nodes: NodeClient::new(),
            local: cfg.local.clone().filter(|_| journal.is_some()),
            peers: tokio::sync::Mutex::new((None, Vec::new())),
        }
    }

    /// A new local output file (with its data id). Its write buffer is the size of a pipe
    /// read (64 KiB): most outputs are smaller, and larger ones arrive in full reads, which
    /// go straight to the file.
    pub fn writer(&self) -> std::io::Result<(String, OutputFile)> {
        let id = new_id();
        let w = self.store.writer_sized(&id, true, 64 << 10)?;
        // Kept only where peers' copies may be written from them.
        let kept = self.local.is_some().then(Vec::new);
        Ok((id, OutputFile { w, kept }))
    }

    /// Healthy registered nodes (cached for a second).
    pub async fn healthy(&self) -> Vec<NodeInfo> {
        let mut p = self.peers.lock().await;
        if p.0.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            if let Ok(n) = self.meta.nodes().await {
                *p = (Some(Instant::now()), n);
            }
        }
        p.1.iter()
            .filter(|n| n.fresh(Duration::ZERO))
            .cloned()
            .collect()
    }

    /// Make `w` durable here and on peers, then create object `path` on it.
    pub async fn commit(
        &self,
        id: String,
        w: OutputFile,
        path: &str,
        parents: bool,
        headers: Headers,
    ) -> Result<Data, ApiError> {
        let data = self.store(id, w).await?;
        let r = self
            .meta
            .put_object(&output(path, parents, &data, headers))
            .await;
        match r {
            Ok(_) => Ok(data),
            Err(e) => {
                let g = Garbage {
                    data_id: data.id.clone(),
                    nodes: data.nodes.clone(),
                };
                let _ = self.meta.queue_garbage(&g).await;
                Err(e)
            }
        }
    }

    /// Make `w` durable here and on peers: the data of an object yet to be created. A small
    /// output whose peers run in this process on this node's journal is made durable here and
    /// there on one call ([`commit_with_copies`]); otherwise each peer fetches a copy.
    pub async fn store(&self, id: String, w: OutputFile) -> Result<Data, ApiError> {
        let mut peers: Vec<NodeInfo> = self.healthy().await;
        peers.retain(|n| n.id != self.node_id);
        peers.shuffle(&mut rand::thread_rng());
        let first = &peers[..peers.len().min(DURABILITY - 1)];
        let urls: Vec<String> = first.iter().map(|p| p.url.clone()).collect();
        let together = (self.local.as_ref())
            .filter(|_| !first.is_empty())
            .and_then(|l| l.sharing_journal(&self.store, &urls))
            .zip(w.kept.map(bytes::Bytes::from));
        let i = id.clone();
        let (own, copies) = match together {
            Some((stores, whole)) => tokio::task::spawn_blocking(move || {
                let (own, copies) = commit_with_copies(w.w, &i, &[whole], &stores);
                (own, Some(copies))
            }),
            None => tokio::task::spawn_blocking(move || (w.w.commit(&i), None)),
        }
        .await
        .map_err(ApiError::internal)?;
        let c = own.map_err(|e| ApiError::internal(format!("storing task output: {e}")))?;
        let mut nodes = vec![self.node_id.clone()];
        let mut rest = &peers[..];
        if let Some(copies) = copies {
            for (p, r) in first.iter().zip(copies) {
                match r {
                    Ok(_) => nodes.push(p.id.clone()),
                    Err(e) => tracing::warn!("node {} could not store {id}: {e}", p.id),
                }
            }
            rest = &peers[first.len()..];
        }
        for p in rest {
            if nodes.len() >= DURABILITY {
                break;
            }
            match self.nodes.fetch(&p.url, &id, &self.url, &c.blake3).await {
                Ok(w) if w.size == c.size => nodes.push(p.id.clone()),
                Ok(_) => tracing::warn!("node {} copied {id} short", p.id),
                Err(e) => tracing::warn!("node {} could not copy {id}: {e}", p.id),
            }
        }
        Ok(Data {
            id,
            size: c.size,
            md5: c.md5.unwrap_or_default(),
            blake3: c.blake3,
            durability: nodes.len() as u8,
            nodes,
        })
    }

    /// This node's own file of `data`'s bytes (a shared empty file for no bytes), if it has one.
    pub fn local_copy(&self, data: &Data) -> Option<LocalFile> {
        let path = match data.size {
            0 => self.dir.join("empty"), // made when the agent starts
            _ => Some(self.store.path(&data.id)).filter(|p| p.exists())?,
        };
        Some(LocalFile { path, local: true })
    }

    /// A file holding `data`'s bytes: this node's copy, or one fetched from a holder.
    pub async fn local_file(&self, data: &Data) -> Result<LocalFile, ApiError> {
        if let Some(f) = self.local_copy(data) {
            return Ok(f);
        }
        let tmp = LocalFile {
            path: self.dir.join("cache").join(new_id()),
            local: false,
        };
        let to = &tmp.path;
        self.first_holder(
            data,
            |url| async move { self.fetch_into(&url, data, to).await },
        )
        .await?;
        Ok(tmp)
    }

    /// `fetch(url)` from each healthy node holding `data` in turn, until one answers.
    async fn first_holder<T, F: std::future::Future<Output = Result<T, ApiError>>>(
        &self,
        data: &Data,
        fetch: impl Fn(String) -> F,
    ) -> Result<T, ApiError> {
        let mut last = ApiError::new(Code::ServiceUnavailable, "no healthy node holds a copy");
        for n in self
            .healthy()
            .await
            .iter()
            .filter(|n| data.nodes.contains(&n.id))
        {
            match fetch(n.url.clone()).await {
                Ok(got) => return Ok(got),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `data`'s bytes to feed a reducer. One of up to [`FEED_AT_ONCE`] is read whole on one
    /// blocking call (this node's copy) or fetched whole into memory (a holder's, checked
    /// against its blake3) — a reducer is fed every map output in turn, and a file opened and
    /// streamed through the blocking pool cost three hand-offs or more for each; a larger one
    /// is a file to stream from, as [`Objects::local_file`] finds it.
    ///
    /// This node's copy is read verified against its block hashes — in place when it is wholly
    /// in the kernel's caches (no hand-off), else on one blocking call; a copy that fails is
    /// passed over for a holder's (whose node, this one included, checks it again and reports
    /// a bad copy for repair), so a reducer is never fed a damaged copy's bytes.
    pub async fn for_feed(&self, data: &Data) -> Result<Feed, ApiError> {
        if data.size > FEED_AT_ONCE {
            return self.local_file(data).await.map(Feed::File);
        }
        if data.size == 0 {
            return Ok(Feed::Bytes(bytes::Bytes::new()));
        }
        if let Some((_, b)) = self.store.read_cached(&data.id, None) {
            return Ok(Feed::Bytes(b));
        }
        // Not cached (or failing): this node's copy, if the data lists one, on one blocking call.
        if data.nodes.contains(&self.node_id) {
            let (store, id, size) = (self.store.clone(), data.id.clone(), data.size);
            let read = tokio::task::spawn_blocking(move || store.reader(&id, 0, size)?.read_all())
                .await
                .map_err(ApiError::internal)?;
            match read {
                Ok(b) if b.len() as u64 == data.size => return Ok(Feed::Bytes(b)),
                Ok(b) => tracing::warn!("this node's copy of {} is {} bytes", data.id, b.len()),
                Err(e) => tracing::warn!("this node's copy of {}: {e}", data.id),
            }
        }
        self.first_holder(data, |url| async move { self.fetch(&url, data).await })
            .await
            .map(Feed::Bytes)
    }

    /// A small `data` whole from the node at `url`, checked against its blake3.
    async fn fetch(&self, url: &str, data: &Data) -> Result<bytes::Bytes, ApiError> {
        let resp = self.nodes.get(url, &data.id, None).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| ApiError::new(Code::ServiceUnavailable, e.to_string()))?;
        if blake3::hash(&body).to_hex().as_str() != data.blake3 {
            return Err(ApiError::internal(format!(
                "copy of {} from {url} differs",
                data.id
            )));
        }
        Ok(body)
    }

    async fn fetch_into(&self, url: &str, data: &Data, to: &PathBuf) -> Result<(), ApiError> {
        let mut resp = self.nodes.get(url, &data.id, None).await?;
        let mut f = tokio::fs::File::create(to)
            .await
            .map_err(ApiError::internal)?;
        let mut h = blake3::Hasher::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ApiError::new(Code::ServiceUnavailable, e.to_string()))?
        {
            h.update(&chunk);
            f.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        f.flush().await.map_err(ApiError::internal)?;
        if h.finalize().to_hex().as_str() != data.blake3 {
            return Err(ApiError::internal(format!(
                "copy of {} from {url} differs",
                data.id
            )));
        }
        Ok(())
    }
}
