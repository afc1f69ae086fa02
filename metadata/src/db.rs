//! The database behind the metadata service, on either backend: SQLite embedded (one file,
//! the default) or PostgreSQL (several metadata services over one database). The logic above
//! sees only [`Sql`]: a write transaction ([`Db::write`], or grouped with others in
//! [`crate::commit`]) or a read connection ([`Db::read`]).
//!
//! Invariants, on both backends: writes are serialised — SQLite has one writer connection and
//! `BEGIN IMMEDIATE`; PostgreSQL takes one transaction-scoped advisory lock first, so writers
//! of every metadata process over the database queue for it — and each write therefore sees
//! every write committed before it, which is what conditional writes, job event logs, leases
//! and multipart commits rely on. A commit is on stable storage before it is acknowledged
//! (`synchronous=FULL`; PostgreSQL's `synchronous_commit`, on by default). A read sees one
//! committed state per statement.

use std::sync::MutexGuard;

use rusqlite::Connection;

use crate::api::Entry;
use crate::cache::EntryCache;
use crate::error::Error;
use crate::pg::{PgConn, PgDb};
use crate::sql::{Dialect, Row, Sql, ToVal};
use crate::sqlite::SqliteDb;

/// The metadata database.
pub struct Db {
    backend: Backend,
    /// Writes waiting for the next group commit ([`crate::commit`]).
    pending: std::sync::Mutex<Vec<crate::commit::Job>>,
    /// Held by the group-commit leader.
    leader: std::sync::Mutex<()>,
    /// Set while a blocking thread leads batches for async writers.
    leading: std::sync::atomic::AtomicBool,
    /// Entries read lately (SQLite only: see [`crate::cache`]).
    cache: Option<EntryCache>,
}

enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite(_) => "Db(sqlite)",
            Backend::Postgres(_) => "Db(postgres)",
        })
    }
}

/// An open write transaction: rolled back when dropped uncommitted.
pub(crate) struct WriteTx<'a> {
    conn: TxConn<'a>,
    open: bool,
    /// Told when the transaction is over, before anyone learns its outcome.
    cache: Option<&'a EntryCache>,
}

enum TxConn<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Postgres(Box<PgConn>),
}

impl WriteTx<'_> {
    fn sql(&self) -> &dyn Sql {
        match &self.conn {
            TxConn::Sqlite(c) => &**c,
            TxConn::Postgres(c) => &**c,
        }
    }

    /// Commit; the transaction is over whatever the outcome.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        let r = self.sql().batch("COMMIT");
        self.open = r.is_err();
        if let Some(c) = self.cache {
            c.settle(r.is_ok());
        }
        r
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.sql().batch("ROLLBACK");
            if let Some(c) = self.cache {
                c.settle(false);
            }
        }
    }
}

impl Sql for WriteTx<'_> {
    fn dialect(&self) -> Dialect {
        self.sql().dialect()
    }
    fn execute(&self, sql: &str, params: &[&dyn ToVal]) -> Result<usize, Error> {
        self.sql().execute(sql, params)
    }
    fn query(&self, sql: &str, params: &[&dyn ToVal]) -> Result<Vec<Row>, Error> {
        self.sql().query(sql, params)
    }
    fn each(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: &mut dyn FnMut(Row) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.sql().each(sql, params, f)
    }
    fn batch(&self, sql: &str) -> Result<(), Error> {
        self.sql().batch(sql)
    }
    fn batch_deferred(&self, sql: &str) -> Result<(), Error> {
        self.sql().batch_deferred(sql)
    }
}

impl Db {
    fn with(backend: Backend, cache: Option<EntryCache>) -> Db {
        Db {
            backend,
            pending: Default::default(),
            leader: Default::default(),
            leading: Default::default(),
            cache,
        }
    }

    /// Open (creating and migrating) the SQLite database file at `path`.
    pub fn open(path: &std::path::Path) -> Result<Db, Error> {
        let db = SqliteDb::open(path)?;
        let cache = EntryCache::default();
        crate::cache::install(&db.writer(), &cache).map_err(crate::sqlite::sql)?;
        Ok(Db::with(Backend::Sqlite(db), Some(cache)))
    }

    /// Open the database `spec` names: `sqlite:PATH` (or a bare path) or `postgres://…`
    /// (also `postgresql://…`), migrating it. PostgreSQL is reached through the current tokio
    /// runtime, which must be multi-threaded (each statement is awaited from a blocking
    /// thread).
    pub fn connect(spec: &str) -> Result<Db, Error> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            // On a thread of its own: connecting blocks, and the caller may be async.
            let pg = std::thread::scope(|s| s.spawn(|| PgDb::connect(spec)).join())
                .map_err(|_| Error::internal("connecting to PostgreSQL panicked"))??;
            return Ok(Db::with(Backend::Postgres(pg), None));
        }
        let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
        Db::open(std::path::Path::new(path))
    }

    /// Which backend this is.
    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Begin a write transaction (waiting for the writers before it).
    pub(crate) fn begin(&self) -> Result<WriteTx<'_>, Error> {
        let conn = match &self.backend {
            Backend::Sqlite(db) => {
                let c = db.writer();
                crate::sqlite::run_cached(&c, "BEGIN IMMEDIATE")?;
                TxConn::Sqlite(c)
            }
            Backend::Postgres(db) => TxConn::Postgres(Box::new(db.begin()?)),
        };
        Ok(WriteTx {
            conn,
            open: true,
            cache: self.cache.as_ref(),
        })
    }

    /// Run `f` in one write transaction; commit if it returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let tx = self.begin()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Set while a blocking thread leads the grouped writes' batches.
    pub(crate) fn leading(&self) -> &std::sync::atomic::AtomicBool {
        &self.leading
    }

    /// Held while a batch of grouped writes commits.
    pub(crate) fn leader(&self) -> MutexGuard<'_, ()> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes queued for the next group commit.
    pub(crate) fn pending(&self) -> MutexGuard<'_, Vec<crate::commit::Job>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a read connection (a consistent snapshot for each statement).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn Sql) -> Result<T, Error>) -> Result<T, Error> {
        match &self.backend {
            Backend::Sqlite(db) => f(&*db.reader()),
            Backend::Postgres(db) => f(&db.conn()?),
        }
    }

    /// Run the short read `f` right here when that cannot wait: on SQLite with a reader
    /// connection idle now (a point read by key is a few µs in the page cache, less than the
    /// hand-off to a blocking thread it saves). `None` — the caller hands `f` to a blocking
    /// thread as for any read — on PostgreSQL (its reads wait on the network) or with every
    /// reader busy.
    pub(crate) fn read_now<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, Error>,
    ) -> Option<Result<T, Error>> {
        match &self.backend {
            Backend::Sqlite(db) => db.idle_reader().map(|c| f(&*c)),
            Backend::Postgres(_) => None,
        }
    }

    /// The entry at `path` (`entry.get`, which every GET and HEAD asks), from the entry cache
    /// when it holds it, else read here as [`Db::read_now`] would (`None`: hand [`Db::entry`]
    /// to a blocking thread).
    pub(crate) fn entry_now(&self, path: &str) -> Option<Result<Option<Entry>, Error>> {
        self.entry_through_cache(path, || self.read_now(|c| crate::namespace::get(c, path)))
    }

    /// The entry at `path`, waiting for a reader if none is idle (a blocking call).
    pub(crate) fn entry(&self, path: &str) -> Result<Option<Entry>, Error> {
        self.entry_through_cache(path, || Some(self.read(|c| crate::namespace::get(c, path))))
            .unwrap_or_else(|| Err(Error::internal("a waiting read answered nothing")))
    }

    /// The entry at `path` from the cache, else from `read` (kept unless a commit overtook it).
    fn entry_through_cache(
        &self,
        path: &str,
        read: impl FnOnce() -> Option<Result<Option<Entry>, Error>>,
    ) -> Option<Result<Option<Entry>, Error>> {
        let Some(cache) = &self.cache else {
            return read();
        };
        if let Some(e) = cache.get(path) {
            return Some(Ok(Some(e)));
        }
        let stamp = cache.stamp();
        let r = read()?;
        if let Ok(Some(e)) = &r {
            cache.put(path, stamp, e);
        }
        Some(r)
    }

    /// `entry.put_object`, grouped with the writes queued meanwhile; the entry written is kept
    /// in the entry cache (a read soon after a write is common: a pipeline's next step).
    pub(crate) async fn put_object(
        self: &std::sync::Arc<Self>,
        req: &crate::api::PutObject,
    ) -> Result<Entry, Error> {
        let db = self.clone();
        let a = req.clone();
        self.write_grouped(move |tx| {
            let e = crate::namespace::put_object(tx, &a)?;
            if let Some(c) = &db.cache {
                c.wrote(&e);
            }
            Ok(e)
        })
        .await
    }

    /// The entry cache (tests).
    #[cfg(test)]
    pub(crate) fn entry_cache(&self) -> Option<&EntryCache> {
        self.cache.as_ref()
    }

    /// SQLite's raw reader connection (tests that count SQLite's own work).
    #[cfg(test)]
    pub(crate) fn sqlite_reader(&self) -> MutexGuard<'_, Connection> {
        match &self.backend {
            Backend::Sqlite(db) => db.reader(),
            Backend::Postgres(_) => panic!("not SQLite"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb;

    /// A read in place happens only with a reader idle; the answer is the same either way.
    #[test]
    fn reads_in_place_only_with_an_idle_reader() {
        let (_dir, db) = testdb::sqlite();
        db.write(|tx| crate::namespace::create_account(tx, "a"))
            .unwrap();
        let get = |db: &super::Db| db.read_now(|c| crate::namespace::get(c, "/a/stor"));
        let now = get(&db).expect("a reader is idle").unwrap().unwrap();
        assert_eq!(
            now,
            db.read(|c| crate::namespace::get(c, "/a/stor"))
                .unwrap()
                .unwrap()
        );
        // Hold every reader: nothing runs in place (the caller would hand it off instead).
        let held: Vec<_> = (0..4).map(|_| db.sqlite_reader()).collect();
        assert!(get(&db).is_none());
        drop(held);
        assert!(get(&db).is_some());
        if let Some(pg) = testdb::postgres() {
            assert!(
                pg.read_now(|_| Ok(())).is_none(),
                "PostgreSQL reads are never in place"
            );
        }
    }
}
