//! Repair: re-creates copies that storage nodes found bad (quarantined) so every object gets
//! back to its durability. For each pending repair, a healthy node that does not hold the data
//! (preferably the one that lost it) fetches it directly from a node with a good copy; the
//! fetching node checks the whole-object blake3 before the copy becomes visible, and only then
//! is metadata told. Runs beside the reclaimer in every gateway; repeats are harmless.

use mobula_metadata::api::Copy;

use crate::Gateway;

/// Repair forever, a batch every `cfg.reclaim_every`.
pub async fn run(gw: &Gateway) {
    loop {
        if let Err(e) = once(gw).await {
            tracing::warn!("repairing: {e}");
        }
        tokio::time::sleep(gw.cfg.reclaim_every).await;
    }
}

/// Attempt every pending repair once; returns how many copies were re-created.
pub async fn once(gw: &Gateway) -> Result<usize, mobula_http::ApiError> {
    let mut done = 0;
    for r in gw.meta.repairs(64).await? {
        let sources = gw.nodes.read_order(&r.data.nodes);
        let Some((_, source_url)) = sources.first() else {
            tracing::error!("data {} has no good copy left to repair from", r.data.id);
            continue;
        };
        let mut candidates = vec![r.bad_node.clone()];
        candidates.extend(gw.nodes.healthy_ids());
        let target = candidates
            .into_iter()
            .filter(|n| !r.data.nodes.contains(n))
            .find_map(|n| gw.nodes.healthy_url(&n).map(|u| (n, u)));
        let Some((target, target_url)) = target else {
            tracing::warn!("no healthy node can take a new copy of {}", r.data.id);
            continue;
        };
        match gw
            .node_client
            .fetch(&target_url, &r.data.id, source_url, &r.data.blake3)
            .await
        {
            Ok(_) => {
                gw.meta
                    .repaired(
                        &r.bad_node,
                        Copy {
                            data_id: r.data.id.clone(),
                            node: target.clone(),
                        },
                    )
                    .await?;
                tracing::info!("repaired {}: new copy on {target}", r.data.id);
                metrics::counter!("mobula_copies_repaired_total", "node" => target).increment(1);
                done += 1;
            }
            Err(e) => tracing::warn!("repairing {} onto {target}: {e}", r.data.id),
        }
    }
    Ok(done)
}
