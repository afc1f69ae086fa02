//! Watching jobs: what `job.wait` sleeps on. Every committed write to a job is counted for that
//! job, and wakes the waiters; a waiter reads its job's row again only when its own job was
//! written — so watchers of other jobs cost a counter lookup per write, not a database read.
//!
//! Invariants: a write is counted after it commits, and a waiter takes its job's count before
//! reading the row, so no write between the read and the wait goes unnoticed; a job's count is
//! dropped once it is done (its waiters then find the count changed, and read the end).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mobula_http::ApiError;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use crate::api::{JobRow, JobWait};
use crate::db::Db;
use crate::jobs;

/// The longest a `job.wait` holds its request.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// The longest a `job.wait` lets progress gather.
const MAX_SETTLE: Duration = Duration::from_secs(1);

/// The metadata service's job watchers.
#[derive(Debug)]
pub(crate) struct JobWatch {
    /// Bumped after every committed job write; its value counts the writes a waiter gathering
    /// progress hears of at once (every one but a running job's `job.log`).
    tx: watch::Sender<u64>,
    /// Committed writes per job not yet done, since this service started.
    writes: Mutex<HashMap<String, u64>>,
    /// Rows read by waiters (for tests and the curious).
    reads: AtomicU64,
}

impl JobWatch {
    pub fn new() -> Arc<JobWatch> {
        Arc::new(JobWatch {
            tx: watch::channel(0).0,
            writes: Mutex::default(),
            reads: AtomicU64::new(0),
        })
    }

    /// After a committed write to job `id`: wake its waiters — at once, even one gathering
    /// progress, when `prompt`; `done` ends the job's count.
    pub fn wrote(&self, id: &str, prompt: bool, done: bool) {
        {
            let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
            if done {
                w.remove(id);
            } else {
                *w.entry(id.to_string()).or_default() += 1;
            }
        }
        self.tx.send_modify(|p| *p += u64::from(prompt));
    }

    fn writes_to(&self, id: &str) -> Option<u64> {
        let w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.get(id).copied()
    }

    /// `job.wait`: the job's row once its version differs from `seen`, or when the time is up.
    /// With `settle_ms`, a change that only moved a running job on (its state the same as in
    /// `seen`, already there or come meanwhile) is answered after more of them have gathered —
    /// at most `settle_ms` later, and at once on a write told promptly (the job's end): a
    /// watcher of a busy job is answered a few times a second instead of once per task, with
    /// no delay to the news that it is done.
    pub async fn wait(&self, db: Arc<Db>, a: JobWait) -> Result<Option<JobRow>, ApiError> {
        let deadline = Instant::now() + Duration::from_millis(a.timeout_ms).min(MAX_WAIT);
        let settle = Duration::from_millis(a.settle_ms).min(MAX_SETTLE);
        let mut changed = self.tx.subscribe();
        let mut settled = settle.is_zero();
        loop {
            // Taken before the read: a write committed after it changes them.
            let prompt = *changed.borrow_and_update();
            let mark = self.writes_to(&a.id);
            let (d, id) = (db.clone(), a.id.clone());
            self.reads.fetch_add(1, Ordering::Relaxed);
            let row = tokio::task::spawn_blocking(move || d.read(|c| jobs::get(c, &id)))
                .await
                .map_err(ApiError::internal)??;
            let now_differs = row.as_ref().is_none_or(|r| r.version() != a.seen);
            let progress = row.as_ref().is_some_and(|r| r.moved_on_from(&a.seen));
            if now_differs && progress && !settled {
                settled = true;
                let until = (Instant::now() + settle).min(deadline);
                while let Ok(Ok(())) = timeout_at(until, changed.changed()).await {
                    if *changed.borrow_and_update() != prompt {
                        break;
                    }
                }
                continue; // read again: everything that gathered
            }
            if now_differs {
                return Ok(row);
            }
            // Until this job is written again (other jobs' writes cost a lookup), or time is up.
            loop {
                if timeout_at(deadline, changed.changed()).await.is_err() {
                    return Ok(row);
                }
                if self.writes_to(&a.id) != mark {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobAppend, NewJob};

    fn job(db: &Db, id: &str) -> JobRow {
        db.read(|c| jobs::get(c, id)).unwrap().unwrap()
    }

    fn log(db: &Db, id: &str, state: &str) {
        let expect_events = job(db, id).events;
        let a = JobAppend {
            id: id.into(),
            expect_events,
            events: vec!["{}".into()],
            state: state.into(),
            ..Default::default()
        };
        db.write(|tx| jobs::log(tx, &a)).unwrap();
    }

    /// Writes to other jobs wake a waiter without a read of its row; its own job's progress
    /// is gathered for the settle time, and its end answered at once.
    #[tokio::test]
    async fn a_waiter_reads_only_for_its_own_job_and_hears_its_end_at_once() {
        let (_dir, db) = crate::testdb::sqlite();
        let db = Arc::new(db);
        db.write(|tx| crate::namespace::create_account(tx, "acct"))
            .unwrap();
        for id in ["a", "b"] {
            let j = NewJob {
                id: id.into(),
                account: "acct".into(),
                name: String::new(),
                spec: "{}".into(),
            };
            db.write(|tx| jobs::create(tx, &j)).unwrap();
        }
        let w = JobWatch::new();
        let wait = |settle_ms: u64| {
            let (w, db) = (w.clone(), db.clone());
            let a = JobWait {
                id: "a".into(),
                seen: job(&db, "a").version(),
                timeout_ms: 5_000,
                settle_ms,
            };
            tokio::spawn(async move { (w.wait(db, a).await.unwrap().unwrap(), Instant::now()) })
        };
        let waiter = wait(0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..50 {
            log(&db, "b", "running");
            w.wrote("b", false, false);
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        assert_eq!(
            w.reads.load(Ordering::Relaxed),
            1,
            "b's writes read a's row"
        );
        log(&db, "a", "running");
        w.wrote("a", false, false);
        let (row, _) = waiter.await.unwrap();
        assert_eq!(row.events, 1);
        assert_eq!(w.reads.load(Ordering::Relaxed), 2);

        // Progress gathers for the settle time; the end is told at once.
        let waiter = wait(2_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        log(&db, "a", "running");
        w.wrote("a", false, false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiter.is_finished(),
            "progress answered before its settle time"
        );
        log(&db, "a", "done");
        let ended = Instant::now();
        w.wrote("a", true, true);
        let (row, answered) = waiter.await.unwrap();
        assert_eq!(row.state, "done");
        assert!(answered.duration_since(ended) < Duration::from_millis(500));
    }
}
