//! The jobs coordinator: drives every unfinished job through its [`Machine`](crate::schedule::Machine)
//! against the cluster. Runs inside a gateway; when several gateways run, the one holding the
//! `jobs` lease in metadata coordinates (the others only serve the API from metadata), and a
//! second writer of a job's event log is refused anyway (`expect_events`).
//!
//! Owns: the lease, a view of the storage nodes (which are up, their agents' slots), the HTTP
//! clients all jobs share (`Clients`), and one actor per unfinished job (`job.rs`) — all
//! inside the future returned by [`Coordinator::run`], so dropping it (a gateway killed) stops
//! everything it started. Nothing here is the record: an actor rebuilds its job from the
//! metadata event log at start, re-attaches to the tasks that were running (agents run a task
//! once per key), and goes on.

mod archive;
mod job;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mobula_metadata::api::Lease;
use mobula_metadata::MetadataClient;
use mobula_storage_node::LocalNodes;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

/// A node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub url: String,
    pub up: bool,
    pub slots: u32,
}

const LEASE_TTL: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Coordinator {
    meta: MetadataClient,
    clients: Clients,
    wake: Notify,
}

/// HTTP clients shared by every job's actor, so their connections to agents and storage
/// nodes are reused across tasks and jobs instead of opened per job.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// To the agents (`/tasks/...`).
    pub agents: crate::client::AgentClient,
    /// To the storage nodes (archived records).
    pub nodes: mobula_storage_node::NodeClient,
}

impl Coordinator {
    /// A coordinator of the jobs in the metadata service at `metadata_url`; the agents of
    /// `local`'s nodes (those in this process) are called without HTTP.
    pub fn new(metadata_url: &str, local: Option<LocalNodes>) -> Arc<Coordinator> {
        let agents = crate::client::AgentClient::with_local(local);
        Arc::new(Coordinator {
            meta: MetadataClient::new(metadata_url),
            clients: Clients {
                agents,
                nodes: mobula_storage_node::NodeClient::new(),
            },
            wake: Notify::new(),
        })
    }

    /// Something changed (a job created, input added, cancel): look now, not at the next tick.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Coordinate until dropped, as `owner` for the lease (stable across restarts of the
    /// same gateway, so it takes the lease straight back).
    pub async fn run(self: Arc<Self>, owner: String) {
        let (nodes_tx, nodes_rx) = watch::channel(Vec::<NodeView>::new());
        let mut actors: HashMap<String, mpsc::UnboundedSender<()>> = HashMap::new();
        let mut set: JoinSet<String> = JoinSet::new();
        let mut renewed: Option<std::time::Instant> = None;
        loop {
            // Renew at most every LEASE_TTL / 5 (each renewal is a metadata write), and at once
            // while not held.
            if renewed.is_none_or(|t| t.elapsed() > LEASE_TTL / 5) {
                let held = self
                    .meta
                    .lease(&Lease {
                        name: "jobs".into(),
                        owner: owner.clone(),
                        ttl_ms: LEASE_TTL.as_millis() as i64,
                    })
                    .await
                    .unwrap_or(false);
                renewed = held.then(std::time::Instant::now);
            }
            let held = renewed.is_some();
            while let Some(r) = set.try_join_next() {
                if let Ok(id) = r {
                    actors.remove(&id);
                }
            }
            if !held {
                set.abort_all();
                actors.clear();
            } else {
                if let Ok(nodes) = self.meta.nodes().await {
                    let view: Vec<NodeView> = nodes
                        .into_iter()
                        .map(|n| NodeView {
                            up: n.fresh(Duration::ZERO),
                            // A draining or dead node takes no new task (those running finish).
                            slots: if n.active() { n.slots } else { 0 },
                            id: n.id,
                            url: n.url,
                        })
                        .collect();
                    nodes_tx.send_if_modified(|v| {
                        let changed = *v != view;
                        *v = view;
                        changed
                    });
                }
                if let Ok(active) = self.meta.jobs_active().await {
                    for id in active {
                        if actors.contains_key(&id) {
                            continue;
                        }
                        let (tx, rx) = mpsc::unbounded_channel();
                        actors.insert(id.clone(), tx);
                        let (meta, nodes) = (self.meta.clone(), nodes_rx.clone());
                        let clients = self.clients.clone();
                        set.spawn(async move {
                            if let Err(e) = job::run(&id, meta, clients, nodes, rx).await {
                                tracing::warn!("job {id}: {e}; picking it up again");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            id
                        });
                    }
                }
                for tx in actors.values() {
                    let _ = tx.send(());
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
