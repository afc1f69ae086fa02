//! The repair queue: copies to re-make (found bad or missing on a node, or held by a node being
//! drained or declared dead), and the claims that let several gateways share it.
//!
//! Invariants: a claimed repair is handed to no other gateway before its claim runs out (claims
//! are writes, serialised like every write, so two claims never take the same row); a repair
//! stays queued until `repaired` swaps the new copy in for the lost one in one transaction, so
//! a gateway that dies mid-repair only delays it by its claim's lease.

use crate::api::{now_ms, Copy, Garbage, Repair};
use crate::error::Error;
use crate::namespace::data_at;
use crate::params;
use crate::registry::{data_nodes, queue_garbage, set_data_nodes};
use crate::sql::Sql;
use mobula_http::Code;

const SELECT: &str = "SELECT r.node, r.queued, d.id, d.size, d.md5, d.blake3, d.durability, d.nodes
     FROM repairs r JOIN data d ON d.id = r.data_id";

fn repair(r: &crate::sql::Row) -> Result<Repair, Error> {
    Ok(Repair {
        bad_node: r.get(0)?,
        queued: r.get(1)?,
        data: data_at(r, 2)?,
    })
}

/// Pending repairs, oldest first (repairs of data deleted since are dropped on the way).
pub fn repairs(conn: &dyn Sql, limit: u32) -> Result<Vec<Repair>, Error> {
    let sql = format!("{SELECT} ORDER BY r.queued LIMIT ?1");
    conn.query_map(&sql, params![limit], repair)
}

/// Up to `limit` pending repairs no gateway holds a live claim on, now claimed for `lease_ms`:
/// those never tried first (oldest first), then those whose claim or retry wait ran out
/// longest ago — an index range scan (`repairs_by_claim`), its cost the same however many
/// repairs are claimed or waiting.
pub fn claim(tx: &dyn Sql, limit: u32, lease_ms: i64) -> Result<Vec<Repair>, Error> {
    let now = now_ms();
    let sql = claim_sql();
    let claimed = tx.query_map(&sql, params![limit, now], repair)?;
    for r in &claimed {
        tx.execute(
            "UPDATE repairs SET claimed_until = ?1 WHERE data_id = ?2 AND node = ?3",
            params![now + lease_ms, r.data.id, r.bad_node],
        )?;
    }
    Ok(claimed)
}

/// The query [`claim`] picks its repairs with (`?1` limit, `?2` now).
pub(crate) fn claim_sql() -> String {
    format!("{SELECT} WHERE r.claimed_until <= ?2 ORDER BY r.claimed_until, r.queued LIMIT ?1")
}

/// Give a claimed repair back: any gateway may take it again after `retry_ms` (a failed one
/// waits a while, so the repairs queued behind it are reached).
pub fn release(tx: &dyn Sql, c: &Copy, retry_ms: i64) -> Result<(), Error> {
    let until = if retry_ms > 0 { now_ms() + retry_ms } else { 0 };
    tx.execute(
        "UPDATE repairs SET claimed_until = ?3 WHERE data_id = ?1 AND node = ?2",
        params![c.data_id, c.node, until],
    )?;
    Ok(())
}

fn durability(tx: &dyn Sql, id: &str) -> Result<usize, Error> {
    let d: Option<i64> = tx.query_opt(
        "SELECT durability FROM data WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    Ok(d.unwrap_or(0) as usize)
}

/// A repair finished: `c.node` holds a good copy again, replacing the one on `lost_on` (lost,
/// or on a node being drained: that copy stops counting now, in the same transaction).
pub fn repaired(tx: &dyn Sql, lost_on: &str, c: &Copy) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM repairs WHERE data_id = ?1 AND node = ?2",
        params![c.data_id, lost_on],
    )?;
    if let Some(mut nodes) = data_nodes(tx, &c.data_id)? {
        let before = nodes.clone();
        nodes.retain(|n| n != lost_on);
        let added = !nodes.contains(&c.node);
        if added {
            nodes.push(c.node.clone());
        }
        // No new copy (the repairer's view was stale: another repair of the same data put a
        // copy there first, or a drop was decided on old counts): the lost copy stops
        // counting only if the others still hold the data's durability.
        if !added && nodes.len() < before.len() && nodes.len() < durability(tx, &c.data_id)? {
            return Err(Error::refused(
                Code::PreconditionFailed,
                format!(
                    "repair of {} on {lost_on}: {} already holds a copy; dropping this one \
                     would leave too few",
                    c.data_id, c.node
                ),
            ));
        }
        if nodes != before {
            set_data_nodes(tx, &c.data_id, &nodes)?;
        }
    } else {
        // Deleted while being repaired: reclaim the new copy too.
        queue_garbage(
            tx,
            &Garbage {
                data_id: c.data_id.clone(),
                nodes: vec![c.node.clone()],
            },
        )?;
    }
    Ok(())
}
