//! Jobs as the metadata service keeps them: the job row (spec, what the user asked — end,
//! cancel — and the coordinator's summary), and a job's append-only lists: inputs as added,
//! the scheduler's event log, outputs, error records and failed inputs.
//!
//! Invariants: inputs can only be added before the input ended or the job was cancelled
//! (`InvalidJobState`), atomically with that check; the event log only grows by a coordinator
//! that has seen all of it (`expect_events`, else `ConcurrentRequest`), in the same
//! transaction as the records and summary those events produced — so a replay of the log
//! rebuilds exactly the state the records describe. Task outputs reported by those events are
//! created in the same transaction; one that cannot be (its path taken by a user's object) is
//! left out, and so is its `out` record, and its data is queued as garbage.

use mobula_http::Code;

use crate::error::Error;
use crate::params;
use crate::sql::{Row, Sql};

use crate::api::{
    now_ms, AddInputs, Garbage, JobAppend, JobRecords, JobRow, Lease, NewJob, PutObject,
};
use crate::namespace;
use crate::registry;

const SELECT: &str = "SELECT id, account, name, spec, state, end_requested, cancel_requested,
    created, done, stats, inputs, consumed, events FROM jobs";

fn row(r: &Row) -> Result<JobRow, Error> {
    Ok(JobRow {
        id: r.get(0)?,
        account: r.get(1)?,
        name: r.get(2)?,
        spec: r.get(3)?,
        state: r.get(4)?,
        end_requested: r.get(5)?,
        cancel_requested: r.get(6)?,
        created: r.get(7)?,
        done: r.get(8)?,
        stats: r.get(9)?,
        inputs: r.get::<i64>(10)? as u64,
        consumed: r.get::<i64>(11)? as u64,
        events: r.get::<i64>(12)? as u64,
    })
}

/// Create a job and its directories.
pub fn create(tx: &dyn Sql, j: &NewJob) -> Result<(), Error> {
    if !namespace::account_exists(tx, &j.account)? {
        return Err(Error::refused(
            Code::AccountDoesNotExist,
            format!("account {} does not exist", j.account),
        ));
    }
    let dir = format!("/{}/jobs/{}", j.account, j.id);
    namespace::mkdir(tx, &dir)?;
    namespace::mkdir(tx, &format!("{dir}/stor"))?;
    tx.execute(
        "INSERT INTO jobs (id, account, name, spec, state, created) VALUES (?1, ?2, ?3, ?4, 'queued', ?5)",
        params![j.id, j.account, j.name, j.spec, now_ms()],
    )?;
    Ok(())
}

/// A job, if it exists.
pub fn get(conn: &dyn Sql, id: &str) -> Result<Option<JobRow>, Error> {
    conn.query_opt(&format!("{SELECT} WHERE id = ?1"), params![id], row)
}

fn must(conn: &dyn Sql, id: &str) -> Result<JobRow, Error> {
    get(conn, id)?.ok_or_else(|| Error::refused(Code::JobNotFound, format!("no job {id}")))
}

/// Ids of the jobs not done yet, oldest first.
pub fn active(conn: &dyn Sql) -> Result<Vec<String>, Error> {
    conn.query_map(
        "SELECT id FROM jobs WHERE state != 'done' ORDER BY created, id",
        params![],
        |r| r.get(0),
    )
}

fn append(tx: &dyn Sql, id: &str, kind: &str, from: u64, values: &[String]) -> Result<(), Error> {
    for (i, v) in values.iter().enumerate() {
        tx.execute(
            "INSERT INTO job_records (job, kind, seq, value) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind, (from + i as u64) as i64, v],
        )?;
    }
    Ok(())
}

/// The next record number of a list (from the primary key's end: no scan).
fn next_seq(tx: &dyn Sql, id: &str, kind: &str) -> Result<u64, Error> {
    tx.query_row(
        "SELECT COALESCE(MAX(seq) + 1, 0) FROM job_records WHERE job = ?1 AND kind = ?2",
        params![id, kind],
        |r| r.get::<i64>(0),
    )
    .map(|n| n as u64)
}

/// Add inputs (and end the input when asked).
pub fn add_inputs(tx: &dyn Sql, a: &AddInputs) -> Result<(), Error> {
    let j = must(tx, &a.id)?;
    if j.end_requested || j.cancel_requested {
        return Err(Error::refused(
            Code::InvalidJobState,
            format!("job {} no longer takes input", a.id),
        ));
    }
    append(tx, &a.id, "in", j.inputs, &a.paths)?;
    tx.execute(
        "UPDATE jobs SET inputs = inputs + ?2, end_requested = ?3 WHERE id = ?1",
        params![a.id, a.paths.len() as i64, a.end],
    )?;
    Ok(())
}

/// End a job's input (idempotent).
pub fn end(tx: &dyn Sql, id: &str) -> Result<(), Error> {
    must(tx, id)?;
    tx.execute(
        "UPDATE jobs SET end_requested = 1 WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}

/// Cancel a job (idempotent until it is done).
pub fn cancel(tx: &dyn Sql, id: &str) -> Result<(), Error> {
    let j = must(tx, id)?;
    if j.state == "done" && !j.cancel_requested {
        return Err(Error::refused(
            Code::InvalidJobState,
            format!("job {id} is already done"),
        ));
    }
    tx.execute(
        "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}

/// Up to `limit` values of one of a job's lists, from position `from`.
pub fn records(conn: &dyn Sql, q: &JobRecords) -> Result<Vec<String>, Error> {
    must(conn, &q.id)?;
    conn.query_map(
        "SELECT value FROM job_records WHERE job = ?1 AND kind = ?2 AND seq >= ?3
         ORDER BY seq LIMIT ?4",
        params![q.id, q.kind, q.from as i64, q.limit],
        |r| r.get(0),
    )
}

/// Log what a coordinator did (see the module docs).
pub fn log(tx: &dyn Sql, a: &JobAppend) -> Result<(), Error> {
    let j = must(tx, &a.id)?;
    if j.events != a.expect_events {
        return Err(Error::refused(
            Code::ConcurrentRequest,
            format!(
                "job {} has {} events logged, the writer expected {}",
                a.id, j.events, a.expect_events
            ),
        ));
    }
    append(tx, &a.id, "ev", j.events, &a.events)?;
    let mut lost = Vec::new();
    for o in &a.objects {
        if !create_output(tx, o)? {
            lost.push(o.path.as_str());
        }
    }
    let out: Vec<String> = a
        .out
        .iter()
        .filter(|p| !lost.contains(&p.as_str()))
        .cloned()
        .collect();
    for (kind, values) in [("out", &out), ("err", &a.err), ("fail", &a.fail)] {
        if !values.is_empty() {
            let from = next_seq(tx, &a.id, kind)?;
            append(tx, &a.id, kind, from, values)?;
        }
    }
    tx.execute(
        "UPDATE jobs SET events = events + ?2, consumed = ?3, stats = ?4, state = ?5,
            done = COALESCE(?6, done) WHERE id = ?1",
        params![
            a.id,
            a.events.len() as i64,
            a.consumed as i64,
            a.stats,
            a.state,
            a.done
        ],
    )?;
    Ok(())
}

/// Create one task output (in a savepoint); false when a user's entry is in its way, its data
/// then queued as garbage. Internal errors fail the whole log.
fn create_output(tx: &dyn Sql, o: &PutObject) -> Result<bool, Error> {
    tx.batch_deferred("SAVEPOINT output")?;
    match namespace::put_object(tx, o) {
        Ok(_) => {
            tx.batch_deferred("RELEASE SAVEPOINT output")?;
            Ok(true)
        }
        Err(e) if e.code() == Code::InternalError => Err(e),
        Err(e) => {
            tx.batch("ROLLBACK TO SAVEPOINT output; RELEASE SAVEPOINT output")?;
            tracing::warn!("task output {} not created: {e}", o.path);
            let g = Garbage {
                data_id: o.data.id.clone(),
                nodes: o.data.nodes.clone(),
            };
            registry::queue_garbage(tx, &g)?;
            Ok(false)
        }
    }
}

/// Take or renew a lease.
pub fn lease(tx: &dyn Sql, l: &Lease) -> Result<bool, Error> {
    let now = now_ms();
    let n = tx.execute(
        "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < ?4",
        params![l.name, l.owner, now + l.ttl_ms, now],
    )?;
    Ok(n > 0)
}
