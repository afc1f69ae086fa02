//! A Mobula storage node: keeps object data as immutable files named by data id (`store.rs`),
//! streams them in and out over HTTP (`server.rs`), registers itself with the metadata service
//! and heartbeats its free space, and deletes orphaned files left by writers that crashed
//! before committing metadata.
//!
//! The surface: [`api`] (wire types, data ids), [`NodeClient`] (how the gateway and peers talk
//! to a node, with [`NodeError`]), [`run`] and [`NodeConfig`] (to run one), [`Store`] and
//! [`Writer`] (a node's files, for the job agent it hosts), [`volume`] (the btrfs and plain
//! backends) and [`blocks`] (the per-block hash format).

pub mod api;
#[doc(hidden)]
pub mod bench;
pub mod blocks;
mod cached;
pub mod client;
mod data_path;
#[cfg(feature = "fake")]
pub mod fake;
mod local;
mod scrub;
mod server;
mod store;
mod tree;
pub mod volume;
mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{NodeClient, NodeError, UploadAborted};
pub use data_path::{BodyStream, DataNodes, DataStream, Opened};
pub use local::{InProcess, LocalFirst, LocalNodes};
use mobula_metadata::api::Heartbeat;
use mobula_metadata::MetadataClient;
pub use store::{Pending, Store, Writer};
use tokio::net::TcpListener;
pub use write::commit_with_copies;

/// Configuration of one storage node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's data directory.
    pub dir: PathBuf,
    /// Metadata service base URL.
    pub metadata_url: String,
    /// URL the node is reached at; defaults to `http://<bound address>`.
    pub advertise_url: Option<String>,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Data files older than this that metadata does not know are deleted as orphans.
    pub orphan_age: Duration,
    /// Time between background scrubs (`None`: only on demand).
    pub scrub_every: Option<Duration>,
    /// Scrub read rate limit, bytes per second.
    pub scrub_rate: u64,
    /// Requests under `/tasks/` go to this handler (the job agent; `None`: no agent).
    pub extension: Option<Extension>,
    /// Nodes of this process the gateway reads from directly; the node joins while it runs.
    pub local: Option<LocalNodes>,
}

/// Handler of a request the node itself does not serve.
pub type ExtensionFn = dyn Fn(
        mobula_http::Request,
    ) -> futures::future::BoxFuture<'static, http::Response<mobula_http::Body>>
    + Send
    + Sync;

/// Another part served from the node's port under `/tasks/` — the job agent, which lives in
/// the `jobs` crate (that crate depends on this one, so the node takes it as a handler).
#[derive(Clone)]
pub struct Extension {
    /// Tasks the agent runs at once (heartbeated to the registry for the scheduler).
    pub slots: u32,
    pub handler: std::sync::Arc<ExtensionFn>,
    /// What callers in this process use instead of `handler` while the node runs here
    /// ([`LocalNodes::extension`]): the agent itself, for its coordinator to call without
    /// HTTP.
    pub local: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extension {{ slots: {} }}", self.slots)
    }
}

impl NodeConfig {
    pub fn new(dir: PathBuf, metadata_url: &str) -> Self {
        NodeConfig {
            dir,
            metadata_url: metadata_url.to_string(),
            advertise_url: None,
            heartbeat: Duration::from_secs(1),
            orphan_age: Duration::from_secs(3600),
            scrub_every: Some(Duration::from_secs(24 * 3600)),
            scrub_rate: 64 << 20,
            extension: None,
            local: None,
        }
    }
}

/// Run a storage node on `listener` until `shutdown` resolves.
pub async fn run(
    cfg: NodeConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let store = Store::open(&cfg.dir)?;
    let id = store.node_id()?;
    let store = store.counted_as(&id);
    let addr: SocketAddr = listener.local_addr()?;
    let url = cfg
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let meta = MetadataClient::new(&cfg.metadata_url);
    let (bad_tx, bad_rx) = tokio::sync::mpsc::unbounded_channel();
    let _local = cfg.local.as_ref().map(|l| {
        let r = l.register(&url, store.clone(), bad_tx.clone());
        if let Some(h) = cfg.extension.as_ref().and_then(|e| e.local.clone()) {
            l.set_extension(&url, h);
        }
        r
    });
    let slots = cfg.extension.as_ref().map_or(0, |e| e.slots);
    let beat = heartbeat_loop(
        store.clone(),
        (id.clone(), url.clone(), slots),
        meta.clone(),
        cfg.heartbeat,
    );
    let sweep = orphan_loop(store.clone(), meta.clone(), cfg.orphan_age);
    let quarantine = quarantine_loop(store.clone(), id.clone(), meta.clone(), bad_rx);
    let scrubber = scrub_loop(
        store.clone(),
        id.clone(),
        meta.clone(),
        bad_tx.clone(),
        cfg.scrub_every,
        cfg.scrub_rate,
    );
    tracing::info!(
        "storage node {id} serving {} ({} volume) at {url}",
        cfg.dir.display(),
        store.volume().kind()
    );
    let state = server::NodeState {
        store,
        id,
        bad: bad_tx,
        meta: Some(meta),
        extension: cfg.extension.clone(),
        peers: crate::NodeClient::new(),
    };
    tokio::select! {
        _ = server::run(listener, state, shutdown) => {}
        _ = beat => {}
        _ = sweep => {}
        _ = quarantine => {}
        _ = scrubber => {}
    }
    Ok(())
}

/// Quarantine copies found bad and tell metadata, which schedules their repair.
async fn quarantine_loop(
    store: Store,
    node: String,
    meta: MetadataClient,
    mut bad: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let found_bad = metrics::counter!("mobula_copies_bad_total", "node" => node.clone());
    while let Some(id) = bad.recv().await {
        found_bad.increment(1);
        let s = store.clone();
        let i = id.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || s.quarantine(&i)).await {
            tracing::error!("quarantining {id}: {e}");
        }
        while let Err(e) = meta.report_bad(&id, &node).await {
            tracing::warn!("reporting bad copy {id}: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn scrub_loop(
    store: Store,
    node: String,
    meta: MetadataClient,
    bad: tokio::sync::mpsc::UnboundedSender<String>,
    every: Option<Duration>,
    rate: u64,
) {
    let Some(every) = every else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        match scrub::find_missing(&store, &node, &meta).await {
            Ok(missing) => {
                for id in missing {
                    tracing::error!("scrub: data {id} is missing on this node");
                    let _ = bad.send(id);
                }
            }
            Err(e) => tracing::warn!("scrub: checking for missing copies: {e}"),
        }
        match scrub::scrub(&store, &bad, Some(rate)).await {
            Ok(r) => tracing::info!(
                "scrub: {} files, {} bytes, {} bad in {:.1} s",
                r.files,
                r.bytes,
                r.bad.len(),
                r.seconds
            ),
            Err(e) => tracing::warn!("scrub failed: {e}"),
        }
    }
}

async fn heartbeat_loop(
    store: Store,
    (id, url, slots): (String, String, u32),
    meta: MetadataClient,
    every: Duration,
) {
    let free = metrics::gauge!("mobula_node_free_bytes", "node" => id.clone());
    loop {
        let (free_bytes, total_bytes) = store.space();
        free.set(free_bytes as f64);
        let hb = Heartbeat {
            id: id.clone(),
            url: url.clone(),
            free_bytes,
            total_bytes,
            slots,
        };
        if let Err(e) = meta.heartbeat(&hb).await {
            tracing::warn!("heartbeat to {} failed: {e}", meta.url());
        }
        tokio::time::sleep(every).await;
    }
}

/// Delete data files that metadata does not know and that are old enough that no write could
/// still be about to commit them (a gateway crashed between writing and committing).
async fn orphan_loop(store: Store, meta: MetadataClient, age: Duration) {
    loop {
        tokio::time::sleep(age.min(Duration::from_secs(600))).await;
        let s = store.clone();
        let Ok(Ok(ids)) = tokio::task::spawn_blocking(move || s.old_ids(age)).await else {
            continue;
        };
        for chunk in ids.chunks(1000) {
            let Ok(known) = meta.known_data(chunk.to_vec()).await else {
                break;
            };
            for id in chunk.iter().filter(|id| !known.contains(id)) {
                tracing::info!("deleting orphaned data {id}");
                let _ = store.delete(id);
            }
        }
    }
}
