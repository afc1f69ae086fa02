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
    /// When the read behind the current list was asked for: an answer to an earlier read (a
    /// background refresh that was slower than a later one) never replaces it.
    asked: Mutex<Option<Instant>>,
    failed: Mutex<HashMap<String, Instant>>,
}

impl Nodes {
    pub fn new(meta: MetadataClient) -> Self {
        Nodes {
            meta,
            list: RwLock::new((Instant::now(), Vec::new())),
            asked: Mutex::new(None),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Reload the registry from metadata.
    pub async fn refresh(&self) -> Result<(), ApiError> {
        let asked = Instant::now();
        let nodes = self.meta.nodes().await?;
        self.set_as_of(nodes, asked);
        Ok(())
    }

    /// Take `nodes` as the registry, as listed now (unit tests give their own).
    pub fn set(&self, nodes: Vec<NodeInfo>) {
        self.set_as_of(nodes, Instant::now())
    }

    /// Take `nodes`, read from metadata at `asked`, as the registry — unless the current list
    /// comes from a later read (two refreshes overlapping: the slower, older answer loses).
    pub fn set_as_of(&self, nodes: Vec<NodeInfo>, asked: Instant) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut current = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_some_and(|c| c > asked) {
            return;
        }
        *current = Some(asked);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(state: &str) -> NodeInfo {
        NodeInfo {
            id: "n0".into(),
            url: "http://node0".into(),
            free_bytes: 1 << 40,
            total_bytes: 1 << 40,
            last_seen_ago_ms: 0,
            slots: 0,
            state: state.into(),
        }
    }

    /// Two refreshes overlap: the older read answers last and must not bring back a state the
    /// newer read had already replaced (a drained node taking copies again).
    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let nodes = Nodes::new(MetadataClient::new("http://127.0.0.1:9"));
        let older = Instant::now();
        let newer = older + Duration::from_millis(5);
        nodes.set_as_of(vec![node("draining")], newer);
        nodes.set_as_of(vec![node("active")], older);
        assert!(nodes.placeable_url("n0").is_none(), "the stale answer won");
        nodes.set_as_of(vec![node("active")], newer + Duration::from_millis(5));
        assert!(nodes.placeable_url("n0").is_some());
    }
}
