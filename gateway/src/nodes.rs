//! The gateway's view of the storage nodes: a cache of the metadata registry, refreshed in the
//! background, plus nodes this gateway saw fail recently (kept out of placement for a while,
//! and tried last on reads). Placement picks distinct healthy, active nodes (not draining or
//! dead) with room, at random, weighted towards free space.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use mobula_http::{ApiError, Code};
use mobula_metadata::api::NodeInfo;
use mobula_metadata::MetadataClient;
use rand::seq::SliceRandom;

/// A node that failed a request is avoided for this long.
pub const PENALTY: Duration = Duration::from_secs(10);

/// Cached registry of storage nodes.
#[derive(Debug)]
pub struct Nodes {
    meta: MetadataClient,
    list: RwLock<(Instant, Vec<NodeInfo>)>,
    failed: Mutex<HashMap<String, Instant>>,
}

impl Nodes {
    pub fn new(meta: MetadataClient) -> Self {
        Nodes {
            meta,
            list: RwLock::new((Instant::now(), Vec::new())),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Reload the registry from metadata.
    pub async fn refresh(&self) -> Result<(), ApiError> {
        let nodes = self.meta.nodes().await?;
        self.set(nodes);
        Ok(())
    }

    /// Take `nodes` as the registry, as listed now (what [`Nodes::refresh`] does with
    /// metadata's answer; unit tests give their own).
    pub fn set(&self, nodes: Vec<NodeInfo>) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        // A node that came back at a new address starts with a clean record.
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        for n in &nodes {
            if list.1.iter().any(|o| o.id == n.id && o.url != n.url) {
                failed.remove(&n.id);
            }
        }
        *list = (Instant::now(), nodes);
    }

    /// Refresh forever, every `every`.
    pub async fn refresh_loop(&self, every: Duration) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!("refreshing storage nodes: {e}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Remember that `id` just failed a request.
    pub fn mark_failed(&self, id: &str) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Instant::now());
    }

    /// Whether `id` failed a request within the last [`PENALTY`].
    pub fn recently_failed(&self, id: &str) -> bool {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match f.get(id) {
            Some(t) if t.elapsed() < PENALTY => true,
            Some(_) => {
                f.remove(id);
                false
            }
            None => false,
        }
    }

    fn healthy(&self, n: &NodeInfo, cached_at: Instant) -> bool {
        n.fresh(cached_at.elapsed()) && !self.recently_failed(&n.id)
    }

    /// URL of node `id`.
    pub fn url(&self, id: &str) -> Option<String> {
        let l = self.list.read().unwrap_or_else(|p| p.into_inner());
        l.1.iter().find(|n| n.id == id).map(|n| n.url.clone())
    }

    /// Ids of every healthy node.
    pub fn healthy_ids(&self) -> Vec<String> {
        let (at, all) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        all.iter()
            .filter(|n| self.healthy(n, at))
            .map(|n| n.id.clone())
            .collect()
    }

    /// URL of node `id` if it is healthy.
    pub fn healthy_url(&self, id: &str) -> Option<String> {
        let (at, all) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        all.iter()
            .find(|n| n.id == id && self.healthy(n, at))
            .map(|n| n.url.clone())
    }

    /// URL of node `id` if it is healthy and takes new copies (active, not draining or dead).
    pub fn placeable_url(&self, id: &str) -> Option<String> {
        let (at, all) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        all.iter()
            .find(|n| n.id == id && n.active() && self.healthy(n, at))
            .map(|n| n.url.clone())
    }

    /// Choose `count` distinct healthy nodes with at least `size` bytes free.
    pub fn place(&self, count: u8, size: u64) -> Result<Vec<(String, String)>, ApiError> {
        self.place_excluding(count, size, &[])
    }

    /// [`Nodes::place`] among the nodes not in `exclude`.
    pub fn place_excluding(
        &self,
        count: u8,
        size: u64,
        exclude: &[String],
    ) -> Result<Vec<(String, String)>, ApiError> {
        let (at, all) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        let healthy: Vec<&NodeInfo> = all
            .iter()
            .filter(|n| n.active() && self.healthy(n, at) && !exclude.contains(&n.id))
            .collect();
        if healthy.len() < count as usize {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "{} healthy storage nodes, {count} copies asked for",
                    healthy.len()
                ),
            ));
        }
        let roomy: Vec<&NodeInfo> = healthy
            .into_iter()
            .filter(|n| n.free_bytes > size.saturating_add(64 << 20))
            .collect();
        if roomy.len() < count as usize {
            return Err(ApiError::new(
                Code::NotEnoughSpace,
                format!("not enough storage nodes with {size} bytes free"),
            ));
        }
        let mut rng = rand::thread_rng();
        let picked = roomy
            .choose_multiple_weighted(&mut rng, count as usize, |n| {
                (n.free_bytes >> 20).max(1) as f64
            })
            .map_err(ApiError::internal)?;
        Ok(picked.map(|n| (n.id.clone(), n.url.clone())).collect())
    }

    /// Of the nodes holding a copy, their (id, url) in the order to try: healthy first.
    pub fn read_order(&self, holders: &[String]) -> Vec<(String, String)> {
        let (at, all) = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out: Vec<(bool, String, String)> = holders
            .iter()
            .filter_map(|id| all.iter().find(|n| &n.id == id))
            .map(|n| (!self.healthy(n, at), n.id.clone(), n.url.clone()))
            .collect();
        out.shuffle(&mut rand::thread_rng());
        out.sort_by_key(|(unhealthy, _, _)| *unhealthy);
        out.into_iter().map(|(_, id, url)| (id, url)).collect()
    }
}
