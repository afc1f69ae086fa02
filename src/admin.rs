//! The admin listener of a `mobula` process (`--admin-listen`): its metrics (`/metrics`) and
//! health (`/health/live`, `/health/ready`) — see `mobula_http::telemetry` — with the readiness
//! checks of the roles this process runs:
//!
//! - metadata: its listener answers `/ping` (the database is open and serving);
//! - storage node: its listener answers `/ping`, and the metadata service it heartbeats to does;
//! - gateway: the metadata service answers, and at least one storage node is healthy (it could
//!   place and read a copy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mobula_gateway::Gateway;
use mobula_http::telemetry::Health;
use mobula_metadata::MetadataClient;

use crate::cluster::{self, Cluster, Running};

/// Start the admin listener on `addr` with `health`; its URL is `Running::url`.
pub async fn start(addr: SocketAddr, health: Health) -> anyhow::Result<Running> {
    let (l, url) = cluster::bind(addr).await?;
    Ok(cluster::spawn_role(url, move |rx| async move {
        mobula_http::telemetry::serve_admin(l, health, async {
            let _ = rx.await;
        })
        .await
    }))
}

async fn ping(url: &str) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    match http.get(format!("{url}/ping")).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url}/ping answered {}", r.status())),
        Err(e) => Err(format!("{url}/ping: {e}")),
    }
}

/// The metadata service listening at `url`.
pub fn metadata(h: &mut Health, url: &str) {
    let url = url.to_string();
    h.check("metadata", move || {
        let url = url.clone();
        async move { ping(&url).await }
    });
}

/// A storage node listening at `url`, registered with the metadata service at `metadata_url`.
pub fn node(h: &mut Health, name: &str, url: &str, metadata_url: &str) {
    let (url, meta) = (url.to_string(), MetadataClient::new(metadata_url));
    h.check(name, move || {
        let (url, meta) = (url.clone(), meta.clone());
        async move {
            ping(&url).await?;
            meta.ping()
                .await
                .map_err(|e| format!("metadata service: {e}"))
        }
    });
}

/// A gateway: its metadata service answers and a storage node is healthy.
pub fn gateway(h: &mut Health, gw: Arc<Gateway>) {
    h.check("gateway", move || {
        let gw = gw.clone();
        async move {
            gw.meta
                .ping()
                .await
                .map_err(|e| format!("metadata service: {e}"))?;
            if gw.nodes.healthy_ids().is_empty() {
                return Err("no healthy storage node".into());
            }
            Ok(())
        }
    });
}

/// Every role of an all-in-one cluster.
pub fn for_cluster(c: &Cluster) -> Health {
    let mut h = Health::default();
    metadata(&mut h, c.metadata_url());
    for (i, n) in c.nodes.iter().enumerate() {
        if let Some(n) = n {
            node(&mut h, &format!("node {i}"), &n.url, c.metadata_url());
        }
    }
    gateway(&mut h, c.gw.clone());
    h
}
