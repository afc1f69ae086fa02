//! Group commit: concurrent writes share one transaction, and so one fsync (SQLite's WAL,
//! PostgreSQL's commit record).
//!
//! A writer queues its work, then tries to lead: whoever holds the leader lock runs every
//! queued write in one write transaction ([`Db::begin`]), each inside a savepoint of its own
//! (a write that fails rolls back its savepoint only — the same changes it would have left
//! behind in a transaction of its own: none), commits once, and only then hands each writer its
//! result. So no one is answered before the commit holding their write is on stable storage
//! (`synchronous=FULL`, `synchronous_commit`), and a failed commit fails every write of its batch. Writes apply in
//! the order they were queued; a write sees every write queued before it.
//!
//! While one batch commits (an fsync: the slowest step of a write), the writes that arrive
//! queue up and go together in the next: under load, N concurrent writes cost about one commit
//! instead of N.

use std::sync::mpsc::sync_channel;

use crate::db::Db;
use crate::error::Error;
use crate::sql::Sql;

/// A queued write: run it in the batch's transaction (which returns how to deliver its result
/// once the commit is known), or fail it without running (the transaction could not begin).
pub(crate) struct Job {
    run: Run,
    fail: Box<dyn FnOnce(String) + Send>,
}

/// Runs a queued write in the batch's transaction.
type Run = Box<dyn FnOnce(&dyn Sql) -> Deliver + Send>;

/// Delivers a result after the commit: `None` committed, `Some(error)` did not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

impl Db {
    /// Run `f` as one write, committed together with the writes queued meanwhile (see the
    /// module doc); its result once the commit is durable.
    pub(crate) fn write_grouped<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = sync_channel::<Result<T, Error>>(1);
        let failed = tx.clone();
        let job = Job {
            run: Box::new(move |t| {
                let r = savepoint(t, f);
                Box::new(move |commit: Option<&str>| {
                    let _ = tx.send(match commit {
                        None => r,
                        Some(e) => Err(Error::internal(format!("commit: {e}"))),
                    });
                })
            }),
            fail: Box::new(move |e| {
                let _ = failed.send(Err(Error::internal(e)));
            }),
        };
        self.pending().push(job);
        loop {
            let lead = self.leader();
            // A leader before us may have run this write already.
            if let Ok(r) = rx.try_recv() {
                return r;
            }
            let batch = std::mem::take(&mut *self.pending());
            if !batch.is_empty() {
                run(self, batch);
            }
            drop(lead);
            if let Ok(r) = rx.try_recv() {
                return r;
            }
        }
    }
}

/// `f` inside a savepoint: released when it succeeds, rolled back when it fails. (Both sent
/// with the statement after them on PostgreSQL: no round trip of their own.)
fn savepoint<T>(t: &dyn Sql, f: impl FnOnce(&dyn Sql) -> Result<T, Error>) -> Result<T, Error> {
    t.batch_deferred("SAVEPOINT w")?;
    match f(t) {
        Ok(v) => {
            t.batch_deferred("RELEASE SAVEPOINT w")?;
            Ok(v)
        }
        Err(e) => {
            t.batch("ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w")?;
            Err(e)
        }
    }
}

/// One batch: every job in one transaction, one commit, then every result.
fn run(db: &Db, batch: Vec<Job>) {
    let started = std::time::Instant::now();
    let writes = batch.len();
    let t = match db.begin() {
        Ok(t) => t,
        Err(e) => {
            let e = e.to_string();
            for j in batch {
                (j.fail)(e.clone());
            }
            return;
        }
    };
    let deliver: Vec<Deliver> = batch.into_iter().map(|j| (j.run)(&t)).collect();
    fail::fail_point!("meta-batch-before-commit");
    let committed = t.commit().map_err(|e| e.to_string());
    metrics::histogram!("mobula_metadata_transaction_seconds").record(started.elapsed());
    metrics::histogram!("mobula_metadata_transaction_writes").record(writes as f64);
    fail::fail_point!("meta-batch-before-ack");
    for d in deliver {
        d(committed.as_ref().err().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::namespace::{account_exists, create_account};

    /// Concurrent writes grouped into shared transactions: each gets its own result; a failed
    /// one leaves nothing behind while the others in its batch commit.
    #[test]
    fn grouped_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("m.db")).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    db.write_grouped(move |t| {
                        let made = create_account(t, &format!("acct{i}"))?;
                        if i % 4 == 0 {
                            // Fails after changing something: that change must not stay.
                            return Err(Error::refused(mobula_http::Code::InvalidArgument, "no"));
                        }
                        Ok(made)
                    })
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let r = t.join().unwrap();
            if i % 4 == 0 {
                assert_eq!(r.unwrap_err().code(), mobula_http::Code::InvalidArgument);
            } else {
                assert!(r.unwrap(), "acct{i} created");
            }
        }
        for i in 0..64 {
            let exists = db.read(|c| account_exists(c, &format!("acct{i}"))).unwrap();
            assert_eq!(exists, i % 4 != 0, "acct{i}");
        }
        // A write sees the writes queued before it (here: the same name again is no new account).
        assert!(!db.write_grouped(|t| create_account(t, "acct1")).unwrap());
    }
}
