//! Reclamation: deletes from the storage nodes the data that no object, link or upload refers
//! to any more (queued by the metadata service in the same transaction that dropped the last
//! reference). An item stays queued until every node that holds it confirmed the delete, so a
//! node that is down is cleaned when it comes back. Any number of gateways may run this.

use crate::Gateway;

/// Reclaim forever, a batch every `cfg.reclaim_every`.
pub async fn run(gw: &Gateway) {
    loop {
        match once(gw).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!("reclaiming: {e}"),
        }
        tokio::time::sleep(gw.cfg.reclaim_every).await;
    }
}

/// Reclaim one batch; returns how many items were fully deleted.
pub async fn once(gw: &Gateway) -> Result<usize, mobula_http::ApiError> {
    let batch = gw.meta.garbage(128).await?;
    let mut done = Vec::new();
    for g in batch {
        let mut all = true;
        for node in &g.nodes {
            match gw.nodes.url(node) {
                Some(url) => {
                    if let Err(e) = gw.data.delete(&url, &g.data_id).await {
                        tracing::debug!("deleting {} on {node}: {e}", g.data_id);
                        all = false;
                    }
                }
                None => tracing::warn!("node {node} of {} is not registered", g.data_id),
            }
        }
        if all {
            done.push(g.data_id);
        }
    }
    let n = done.len();
    if n > 0 {
        gw.meta.garbage_done(done).await?;
    }
    Ok(n)
}
