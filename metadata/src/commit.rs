//! Group commit: concurrent writes share one transaction, and so one fsync (SQLite's WAL,
//! PostgreSQL's commit record).
//!
//! A writer queues its work and awaits its result; the first to find no leader running starts
//! one on a blocking thread, which — holding the leader lock — runs every queued write in one
//! write transaction ([`Db::begin`]), each inside a savepoint of its own
//! (a write that fails rolls back its savepoint only — the same changes it would have left
//! behind in a transaction of its own: none), commits once, and only then hands each writer its
//! result. So no one is answered before the commit holding their write is on stable storage
//! (`synchronous=FULL`, `synchronous_commit`), and a failed commit fails every write of its batch. Writes apply in
//! the order they were queued; a write sees every write queued before it.
//!
//! While one batch commits (an fsync: the slowest step of a write), the writes that arrive
//! queue up and go together in the next: under load, N concurrent writes cost about one commit
//! instead of N.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::db::Db;
use crate::error::Error;
use crate::sql::Sql;

/// A queued write: run it in the batch's transaction, or with the reason the transaction
/// could not begin (it fails without running); either way it returns how to deliver its result
/// once the commit is known.
pub(crate) struct Job(Box<dyn FnOnce(Started) -> Deliver + Send>);

/// The batch's transaction, or why it could not begin.
type Started<'a> = Result<&'a dyn Sql, &'a str>;

/// Delivers a result after the commit: `None` committed, `Some(error)` did not.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// `f` as a job whose result goes to `reply`.
fn job<T: Send + 'static>(
    f: impl FnOnce(&dyn Sql) -> Result<T, Error> + Send + 'static,
    reply: impl FnOnce(Result<T, Error>) + Send + 'static,
) -> Job {
    Job(Box::new(move |t| {
        let r = match t {
            Ok(t) => savepoint(t, f),
            Err(e) => Err(Error::internal(e.to_string())),
        };
        Box::new(move |commit: Option<&str>| {
            reply(match commit {
                None => r,
                Some(e) => Err(Error::internal(format!("commit: {e}"))),
            })
        })
    }))
}

impl Db {
    /// Run `f` as one write, committed together with the writes queued meanwhile (see the
    /// module doc); its result once the commit is durable. Awaited without holding a thread: a
    /// blocking thread is taken only to lead batches, while any are queued.
    pub(crate) async fn write_grouped<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Sql) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending().push(job(f, move |r| {
            let _ = tx.send(r);
        }));
        if !self.leading().swap(true, Ordering::SeqCst) {
            let db = self.clone();
            tokio::task::spawn_blocking(move || db.lead());
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::internal("the write's batch was lost")))
    }

    /// Run batches until none is queued (the writers' leader).
    fn lead(&self) {
        /// Should a write's code panic, the flag falls with the leader, so that the next
        /// write starts a new one (the panicking batch's writers get an error).
        struct Fall<'a>(&'a Db);
        impl Drop for Fall<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.leading().store(false, Ordering::SeqCst);
                }
            }
        }
        let _fall = Fall(self);
        loop {
            let lead = self.leader();
            let batch = std::mem::take(&mut *self.pending());
            if !batch.is_empty() {
                run(self, batch);
                continue;
            }
            drop(lead);
            self.leading().store(false, Ordering::SeqCst);
            // A write queued after the take, before the flag fell, found a leader: be it.
            if self.pending().is_empty() || self.leading().swap(true, Ordering::SeqCst) {
                return;
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
                (j.0)(Err(&e))(None);
            }
            return;
        }
    };
    let deliver: Vec<Deliver> = batch.into_iter().map(|j| (j.0)(Ok(&t))).collect();
    // The crash points count batches of 3 writes or more: a batch of the nodes' heartbeats
    // alone (a node writes one at a time) is no test of a group's commit.
    fail::fail_point!("meta-batch-before-commit", writes >= 3, |_| {});
    let committed = t.commit().map_err(|e| e.to_string());
    metrics::histogram!("mobula_metadata_transaction_seconds").record(started.elapsed());
    metrics::histogram!("mobula_metadata_transaction_writes").record(writes as f64);
    fail::fail_point!("meta-batch-before-ack", writes >= 3, |_| {});
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
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("m.db")).unwrap());
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write_grouped(move |t| {
                        let made = create_account(t, &format!("acct{i}"))?;
                        if i % 4 == 0 {
                            // Fails after changing something: that change must not stay.
                            return Err(Error::refused(mobula_http::Code::InvalidArgument, "no"));
                        }
                        Ok(made)
                    })
                    .await
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let r = t.await.unwrap();
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
        assert!(!db
            .write_grouped(|t| create_account(t, "acct1"))
            .await
            .unwrap());
        // The leader stands down once nothing is queued (it answers before it looks again).
        let mut waited = 0;
        while db.leading().load(Ordering::SeqCst) && waited < 2000 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            waited += 1;
        }
        assert!(
            !db.leading().load(Ordering::SeqCst),
            "the leader stood down"
        );
        assert!(db.pending().is_empty());
    }
}
