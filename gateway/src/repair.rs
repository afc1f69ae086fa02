//! Repair: re-creates copies so every object gets back to its durability — copies storage nodes
//! found bad (quarantined), and every copy of a node being drained or declared dead.
//!
//! A draining or dead node's copy of an object that already holds its durability on active
//! nodes is dropped rather than re-made. For every other pending repair, a node that takes new copies and does not hold the data (preferably
//! the one that lost it, for a bad copy; else one chosen as placement would, weighted towards
//! free space) fetches it directly from a healthy node with a good copy; the fetching node checks
//! the whole-object blake3 before the copy becomes visible, and only then is metadata told — in
//! one transaction that swaps the new copy in for the old, so an object never counts fewer
//! copies than it has. A drained node's old copy is deleted after the swap. Repairs are paced to
//! [`GatewayConfig::repair_rate`](crate::GatewayConfig) bytes per second, [`PARALLEL`] at a
//! time; several gateways share the queue through claims (a claimed repair is no other
//! gateway's until it is done, or given back on failure (to be retried [`RETRY`] later), or its claim runs out).
//!
//! The same loop declares nodes silent for longer than `dead_after` dead, and (every
//! [`EVACUATE_EVERY`]) queues again the copies of every draining or dead node, so an evacuation
//! interrupted half-way is finished. Runs beside the reclaimer in every gateway; repeats are
//! harmless (queueing is idempotent, a finished repair is found gone).

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use mobula_metadata::api::{Copy, Repair};

use crate::Gateway;

/// How often the copies of draining and dead nodes are queued again.
pub const EVACUATE_EVERY: Duration = Duration::from_secs(30);

/// Repair forever, a batch every `cfg.reclaim_every`.
pub async fn run(gw: &Gateway) {
    let mut evacuated: Option<Instant> = None;
    loop {
        let due = evacuated.is_none_or(|t| t.elapsed() >= EVACUATE_EVERY);
        match lifecycle(gw, due).await {
            Ok(()) if due => evacuated = Some(Instant::now()),
            Ok(()) => {}
            Err(e) => tracing::warn!("node lifecycle: {e}"),
        }
        if let Err(e) = once(gw).await {
            tracing::warn!("repairing: {e}");
        }
        tokio::time::sleep(gw.cfg.reclaim_every).await;
    }
}

/// Declare silent nodes dead; queue the copies of draining and dead nodes (all of them when
/// `all`, else only those of nodes just declared dead).
async fn lifecycle(gw: &Gateway, all: bool) -> Result<(), mobula_http::ApiError> {
    let dead_after = gw.cfg.dead_after.as_millis() as i64;
    for n in gw.meta.nodes().await? {
        let silent = n.active() && n.last_seen_ago_ms > dead_after;
        if silent {
            tracing::warn!(
                "storage node {} silent for {} s: declaring it dead, re-making its copies",
                n.id,
                n.last_seen_ago_ms / 1000
            );
            gw.meta.node_set_state(&n.id, "dead").await?;
        }
        if silent || (all && !n.active()) {
            gw.meta.node_evacuate(&n.id).await?;
        }
    }
    Ok(())
}

/// Repairs one gateway runs at once. Each is a fetch from node to node (the gateway carries
/// no bytes), so this spreads the work over every source and target node. A small object's
/// repair is mostly waiting (two fsyncs on its target, a metadata commit), so many overlap;
/// at most [`PARALLEL_LARGE`] of them move objects of [`LARGE`] or more.
pub const PARALLEL: usize = 32;
pub const PARALLEL_LARGE: usize = 8;
pub const LARGE: u64 = 1 << 20;

/// Repairs claimed at a time, and how long a claim keeps them this gateway's alone (several
/// gateways share the queue; a repair whose gateway died is taken again after this).
const BATCH: u32 = 128;
const CLAIM: Duration = Duration::from_secs(120);
/// How long a failed repair waits before any gateway tries it again.
pub const RETRY: Duration = Duration::from_secs(5);

/// Attempt every pending repair once, [`PARALLEL`] at a time, until the queue holds no
/// unclaimed repair; returns how many copies were re-created or dropped.
pub async fn once(gw: &Gateway) -> Result<usize, mobula_http::ApiError> {
    let started = Instant::now();
    let (mut done, mut bytes) = (0, 0u64);
    loop {
        let mut batch = gw.meta.claim_repairs(BATCH, CLAIM).await?;
        let full = batch.len() == BATCH as usize;
        // One repair per data at a time: a second one's view of the copies would be stale
        // once the first is done (metadata refuses what that would get wrong; this saves the
        // wasted work). The others go back to the queue for the next batch.
        let mut seen = std::collections::HashSet::new();
        let (now, later): (Vec<Repair>, Vec<Repair>) = batch
            .drain(..)
            .partition(|r| seen.insert(r.data.id.clone()));
        for r in &later {
            gw.meta.release_repair(lost_copy(r), Duration::ZERO).await?;
        }
        let batch = now;
        let large = &tokio::sync::Semaphore::new(PARALLEL_LARGE);
        let mut runs = stream::iter(batch)
            .map(|r| async move {
                let lost = lost_copy(&r);
                let _permit = match r.data.size >= LARGE {
                    true => large.acquire().await.ok(),
                    false => None,
                };
                match repair(gw, r).await {
                    Ok(Some(moved)) => return (1, moved),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("repairing {}: {e}", lost.data_id),
                }
                // Failed: any gateway's again after a while (meanwhile the claims reach the
                // repairs queued behind it).
                if let Err(e) = gw.meta.release_repair(lost, RETRY).await {
                    tracing::warn!("releasing a repair: {e}");
                }
                (0, 0)
            })
            .buffer_unordered(PARALLEL);
        while let Some((n, moved)) = runs.next().await {
            done += n;
            bytes += moved;
            let due = Duration::from_secs_f64(bytes as f64 / gw.cfg.repair_rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if !full {
            return Ok(done);
        }
    }
}

fn lost_copy(r: &Repair) -> Copy {
    Copy {
        data_id: r.data.id.clone(),
        node: r.bad_node.clone(),
    }
}

/// One repair: `Ok(Some(bytes copied))` when the copy was re-made (or dropped as not needed:
/// 0 bytes), `Ok(None)` when it cannot be done now (said in the log).
async fn repair(gw: &Gateway, r: Repair) -> Result<Option<u64>, mobula_http::ApiError> {
    let sources: Vec<(String, String)> = gw
        .nodes
        .read_order(&r.data.nodes)
        .into_iter()
        .filter(|(id, _)| gw.nodes.healthy_url(id).is_some())
        .collect();
    let Some((_, source_url)) = sources.first() else {
        tracing::error!("data {} has no good copy left to repair from", r.data.id);
        return Ok(None);
    };
    // A draining or dead node's copy that the object does not need (it holds its durability
    // on active nodes already): dropped, not re-made.
    let kept: Vec<&String> = r
        .data
        .nodes
        .iter()
        .filter(|n| **n != r.bad_node && gw.nodes.placeable_url(n).is_some())
        .collect();
    if r.data.nodes.contains(&r.bad_node) && kept.len() >= r.data.durability as usize {
        let copy = Copy {
            data_id: r.data.id.clone(),
            node: kept[0].clone(),
        };
        gw.meta.repaired(&r.bad_node, copy).await?;
        if let Some(url) = gw.nodes.healthy_url(&r.bad_node) {
            let _ = gw.data.delete(&url, &r.data.id).await;
        }
        return Ok(Some(0));
    }
    let again_on_loser = gw
        .nodes
        .placeable_url(&r.bad_node)
        .filter(|_| !r.data.nodes.contains(&r.bad_node))
        .map(|u| (r.bad_node.clone(), u));
    let (target, target_url) = match again_on_loser {
        Some(t) => t,
        None => match gw.nodes.place_excluding(1, r.data.size, &r.data.nodes) {
            Ok(mut t) => t.remove(0),
            Err(e) => {
                tracing::warn!("no node can take a new copy of {}: {e}", r.data.id);
                return Ok(None);
            }
        },
    };
    if let Err(e) = gw
        .node_client
        .fetch(&target_url, &r.data.id, source_url, &r.data.blake3)
        .await
    {
        // A node that cannot be reached (it died, and its heartbeat is not stale yet) is
        // avoided for a while, as reads do, rather than chosen again by the next repairs: the
        // target, or the source when the target says it could not read from it.
        if mobula_storage_node::api::source_failed(&e) {
            if let Some((id, _)) = sources.first() {
                gw.nodes.mark_failed(id);
            }
        } else if matches!(e, mobula_storage_node::NodeError::Unreachable(_)) {
            gw.nodes.mark_failed(&target);
        }
        tracing::warn!("repairing {} onto {target}: {e}", r.data.id);
        return Ok(None);
    }
    let copy = Copy {
        data_id: r.data.id.clone(),
        node: target.clone(),
    };
    gw.meta.repaired(&r.bad_node, copy).await?;
    tracing::info!("repaired {}: new copy on {target}", r.data.id);
    metrics::counter!("mobula_copies_repaired_total", "node" => target).increment(1);
    // A drained node's copy is no longer counted: free its space (best effort; the node is
    // removed once drained, whatever it still keeps).
    if r.data.nodes.contains(&r.bad_node) {
        if let Some(url) = gw.nodes.healthy_url(&r.bad_node) {
            let _ = gw.data.delete(&url, &r.data.id).await;
        }
    }
    Ok(Some(r.data.size))
}
