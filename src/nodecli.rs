//! `mobula node list|drain|remove|rebalance`: storage nodes' lifecycle, through the metadata
//! service (the gateways' repair loops do the copying, paced to their `--repair-rate`).
//!
//! - `drain ID`: the node takes no new copies or tasks; every copy it holds is queued to be
//!   re-made elsewhere, and the command shows the copies left until none is (Ctrl-C only stops
//!   watching: the gateways go on). Each old copy keeps counting until its new one exists.
//! - `remove ID`: forget a drained (or dead) node that holds no copy anything needs.
//! - `rebalance`: move a share of the copies of the nodes holding more than their share (the
//!   mean, +10%) to the others, placed as new copies are (weighted towards free space).

use std::time::Duration;

use clap::Subcommand;
use mobula_metadata::api::{Evacuate, STALE};
use mobula_metadata::MetadataClient;

/// What `mobula node` does.
#[derive(Subcommand, Debug)]
pub enum NodeOp {
    /// Every storage node: state, free space, copies held, last heartbeat, task slots.
    List,
    /// Stop new copies and tasks on a node and re-make each of its copies elsewhere.
    Drain {
        /// The node's id (`mobula node list`).
        id: String,
        /// Queue the work and return without watching it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Forget a drained or dead node that holds nothing needed.
    Remove {
        /// The node's id.
        id: String,
    },
    /// Move a share of the copies of the fullest nodes to the others (e.g. after adding one).
    Rebalance,
}

fn size(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Run `op` against the metadata service `meta`.
pub async fn run(meta: &MetadataClient, op: NodeOp) -> anyhow::Result<()> {
    match op {
        NodeOp::List => {
            println!(
                "{:<18} {:<24} {:<9} {:>10} {:>8} {:>14} {:>5}",
                "ID", "URL", "STATE", "FREE", "COPIES", "HEARTBEAT", "SLOTS"
            );
            for n in meta.nodes().await? {
                let copies = meta.node_copies(&n.id).await?;
                let beat = format!("{:.1} s ago", n.last_seen_ago_ms as f64 / 1000.0);
                let state = if n.active() && n.last_seen_ago_ms >= STALE.as_millis() as i64 {
                    "silent".to_string()
                } else {
                    n.state.clone()
                };
                println!(
                    "{:<18} {:<24} {:<9} {:>10} {:>8} {:>14} {:>5}",
                    n.id,
                    n.url,
                    state,
                    size(n.free_bytes),
                    copies,
                    beat,
                    n.slots
                );
            }
        }
        NodeOp::Drain { id, no_wait } => {
            meta.node_set_state(&id, "draining").await?;
            meta.node_evacuate(&id).await?;
            let start = meta.node_copies(&id).await?;
            println!("draining {id}: {start} copies to re-make elsewhere");
            if no_wait {
                return Ok(());
            }
            loop {
                let left = meta.node_copies(&id).await?;
                println!("{id}: {left} copies left");
                if left == 0 {
                    println!("{id} is drained: `mobula node remove {id}` forgets it");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        NodeOp::Remove { id } => {
            meta.node_remove(&id).await?;
            println!("removed {id}");
        }
        NodeOp::Rebalance => {
            let nodes: Vec<_> = meta
                .nodes()
                .await?
                .into_iter()
                .filter(|n| n.active() && n.last_seen_ago_ms < STALE.as_millis() as i64)
                .collect();
            let mut counts = Vec::new();
            for n in &nodes {
                counts.push((n.id.clone(), meta.node_copies(&n.id).await?));
            }
            let total: u64 = counts.iter().map(|(_, c)| c).sum();
            let mean = total / counts.len().max(1) as u64;
            let mut moved = 0;
            for (id, c) in counts {
                let excess = c.saturating_sub(mean + mean / 10);
                if excess == 0 {
                    continue;
                }
                let mut after = String::new();
                let mut queued = 0u64;
                while queued < excess {
                    let limit = (excess - queued).min(1000) as u32;
                    let e = Evacuate {
                        id: id.clone(),
                        after: after.clone(),
                        limit,
                    };
                    match meta.node_evacuate_page(&e).await? {
                        Some(last) => after = last,
                        None => break,
                    }
                    queued += u64::from(limit);
                }
                println!("{id}: {c} copies, moving {excess}");
                moved += excess;
            }
            println!(
                "{total} copies on {} nodes (mean {mean}): {moved} to move",
                nodes.len()
            );
        }
    }
    Ok(())
}
