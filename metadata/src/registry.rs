//! The storage-node registry (heartbeats, free space) and the reclamation queue.

use crate::error::Error;
use crate::params;
use crate::sql::{Dialect, Sql, ToVal};

use crate::api::{
    now_ms, ClusterSummary, Copy, Evacuate, Garbage, Heartbeat, NodeInfo, NodeState, NODE_STATES,
    STALE,
};

/// Record a heartbeat: insert or refresh the node.
pub fn heartbeat(tx: &dyn Sql, hb: &Heartbeat) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO nodes (id, url, free_bytes, total_bytes, last_seen, slots)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, free_bytes = excluded.free_bytes,
            total_bytes = excluded.total_bytes, last_seen = excluded.last_seen,
            slots = excluded.slots
         WHERE nodes.state <> 'removed'",
        params![
            hb.id,
            hb.url,
            hb.free_bytes as i64,
            hb.total_bytes as i64,
            now_ms(),
            hb.slots
        ],
    )?;
    Ok(())
}

/// How the data stands as a whole (see [`ClusterSummary`]).
pub fn summary(conn: &dyn Sql) -> Result<ClusterSummary, Error> {
    let fresh_since = now_ms() - STALE.as_millis() as i64;
    let count = |q: &str, p: &[&dyn ToVal]| -> Result<u64, Error> { conn.value::<u64>(q, p) };
    // A data row's node list is JSON: its elements as rows `j(value)`.
    let elements = match conn.dialect() {
        Dialect::Sqlite => "json_each(d.nodes) j",
        Dialect::Postgres => "json_array_elements_text(d.nodes::json) j(value)",
    };
    Ok(ClusterSummary {
        data: count("SELECT count(*) FROM data", params![])?,
        under_replicated: count(
            &format!(
                "SELECT count(*) FROM data d WHERE d.durability > (
                    SELECT count(*) FROM {elements}
                    JOIN nodes n ON n.id = j.value AND n.last_seen >= ?1)"
            ),
            params![fresh_since],
        )?,
        repairs: count("SELECT count(*) FROM repairs", params![])?,
        garbage: count("SELECT count(*) FROM garbage", params![])?,
    })
}

/// Every registered node, with the time since its last heartbeat.
pub fn nodes(conn: &dyn Sql) -> Result<Vec<NodeInfo>, Error> {
    let now = now_ms();
    conn.query_map(
        "SELECT id, url, free_bytes, total_bytes, last_seen, slots, state FROM nodes
             WHERE state <> 'removed' ORDER BY id",
        params![],
        |r| {
            Ok(NodeInfo {
                id: r.get(0)?,
                url: r.get(1)?,
                free_bytes: r.get::<i64>(2)? as u64,
                total_bytes: r.get::<i64>(3)? as u64,
                last_seen_ago_ms: now - r.get::<i64>(4)?,
                slots: r.get(5)?,
                state: r.get(6)?,
            })
        },
    )
}

/// Up to `limit` unreferenced data items, oldest first. An item whose data is live after all
/// (queued by a writer that did not hear its commit succeed) is never handed out.
pub fn garbage(conn: &dyn Sql, limit: u32) -> Result<Vec<Garbage>, Error> {
    conn.query_map(
        "SELECT data_id, nodes FROM garbage
             WHERE NOT EXISTS (SELECT 1 FROM data WHERE data.id = garbage.data_id)
             ORDER BY queued LIMIT ?1",
        params![limit],
        |r| {
            Ok(Garbage {
                data_id: r.get(0)?,
                nodes: serde_json::from_str(&r.get::<String>(1)?).unwrap_or_default(),
            })
        },
    )
}

/// Forget reclaimed data items.
pub fn garbage_done(tx: &dyn Sql, ids: &[String]) -> Result<(), Error> {
    for id in ids {
        tx.execute("DELETE FROM garbage WHERE data_id = ?1", params![id])?;
    }
    Ok(())
}

/// Queue data that was written to nodes but never committed (a failed PUT).
pub fn queue_garbage(tx: &dyn Sql, g: &Garbage) -> Result<(), Error> {
    let nodes = serde_json::to_string(&g.nodes).map_err(Error::internal)?;
    tx.execute(
        "INSERT INTO garbage (data_id, nodes, queued) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![g.data_id, nodes, now_ms()],
    )?;
    Ok(())
}

/// Of `ids`, those metadata knows (live data or queued garbage); a node deletes the rest
/// of its old files as orphans of crashed writers.
pub fn known_data(conn: &dyn Sql, ids: &[String]) -> Result<Vec<String>, Error> {
    let mut known = Vec::new();
    for id in ids {
        if conn.value::<bool>(
            "SELECT EXISTS (SELECT 1 FROM data WHERE id = ?1)
                 OR EXISTS (SELECT 1 FROM garbage WHERE data_id = ?1)",
            params![id],
        )? {
            known.push(id.clone());
        }
    }
    Ok(known)
}

pub(crate) fn data_nodes(tx: &dyn Sql, id: &str) -> Result<Option<Vec<String>>, Error> {
    let nodes: Option<String> =
        tx.query_opt("SELECT nodes FROM data WHERE id = ?1", params![id], |r| {
            r.get(0)
        })?;
    Ok(nodes.map(|n| serde_json::from_str(&n).unwrap_or_default()))
}

pub(crate) fn set_data_nodes(tx: &dyn Sql, id: &str, nodes: &[String]) -> Result<(), Error> {
    let json = serde_json::to_string(nodes).map_err(Error::internal)?;
    tx.execute(
        "UPDATE data SET nodes = ?2 WHERE id = ?1",
        params![id, json],
    )?;
    Ok(())
}

/// A node found its copy of some data bad: stop reading it there and queue a repair.
/// Unknown data (deleted meanwhile) is ignored.
pub fn report_bad(tx: &dyn Sql, c: &Copy) -> Result<(), Error> {
    let Some(mut nodes) = data_nodes(tx, &c.data_id)? else {
        return Ok(());
    };
    nodes.retain(|n| n != &c.node);
    set_data_nodes(tx, &c.data_id, &nodes)?;
    tx.execute(
        "INSERT INTO repairs (data_id, node, queued) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![c.data_id, c.node, now_ms()],
    )?;
    Ok(())
}

/// Up to `limit` ids of data that metadata believes `node` holds, after `after` (by id).
/// Scrub compares this with the files on the node to find missing copies.
pub fn data_on_node(
    conn: &dyn Sql,
    node: &str,
    after: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    let pattern = format!(
        "%{}%",
        serde_json::to_string(node).map_err(Error::internal)?
    );
    conn.query_map(
        "SELECT id FROM data WHERE id > ?1 AND nodes LIKE ?2 ORDER BY id LIMIT ?3",
        params![after, pattern, limit],
        |r| r.get(0),
    )
}

/// Set a node's lifecycle state (`NotFound` for an unknown node).
pub fn set_state(tx: &dyn Sql, s: &NodeState) -> Result<(), Error> {
    if !NODE_STATES.contains(&s.state.as_str()) {
        return Err(Error::refused(
            mobula_http::Code::InvalidArgument,
            format!("node state must be one of {NODE_STATES:?}"),
        ));
    }
    let n = tx.execute(
        "UPDATE nodes SET state = ?2 WHERE id = ?1 AND state <> 'removed'",
        params![s.id, s.state],
    )?;
    if n == 0 {
        return Err(Error::refused(
            mobula_http::Code::ResourceNotFound,
            format!("no storage node {}", s.id),
        ));
    }
    Ok(())
}

/// Queue the re-making elsewhere of up to `e.limit` copies held by node `e.id` (after data id
/// `e.after`). The node's copies keep counting (and serving reads) until each new copy exists:
/// [`repaired`] swaps them in one transaction. The last id queued, `None` when none was left.
pub fn evacuate(tx: &dyn Sql, e: &Evacuate) -> Result<Option<String>, Error> {
    let ids = data_on_node(tx, &e.id, &e.after, e.limit)?;
    let now = now_ms();
    for id in &ids {
        tx.execute(
            "INSERT INTO repairs (data_id, node, queued) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![id, e.id, now],
        )?;
    }
    Ok(ids.last().cloned())
}

/// How many copies node `id` holds (a scan of the data table: an operator's question).
pub fn copies_on(conn: &dyn Sql, id: &str) -> Result<u64, Error> {
    let pattern = format!("%{}%", serde_json::to_string(id).map_err(Error::internal)?);
    conn.value(
        "SELECT count(*) FROM data WHERE nodes LIKE ?1",
        params![pattern],
    )
}

/// Forget node `id`: only once it is not active and holds no copy anything needs. Its id is
/// retired, not deleted: a node still running keeps heartbeating under it, and those
/// heartbeats must not bring it back as a new, active node (new copies placed on a machine
/// the operator took out). A machine rejoins under a new id (a fresh node directory).
pub fn remove(tx: &dyn Sql, id: &str) -> Result<(), Error> {
    let state: Option<String> = {
        tx.query_opt(
            "SELECT state FROM nodes WHERE id = ?1 AND state <> 'removed'",
            params![id],
            |r| r.get(0),
        )?
    };
    let refuse = |m: String| Err(Error::refused(mobula_http::Code::InvalidUpdate, m));
    match state.as_deref() {
        None => {
            return Err(Error::refused(
                mobula_http::Code::ResourceNotFound,
                format!("no storage node {id}"),
            ))
        }
        Some("active") => return refuse(format!("node {id} is active: drain it first")),
        Some(_) => {}
    }
    let left = copies_on(tx, id)?;
    if left > 0 {
        return refuse(format!(
            "node {id} still holds {left} copies that are needed"
        ));
    }
    tx.execute(
        "UPDATE nodes SET state = 'removed' WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}
