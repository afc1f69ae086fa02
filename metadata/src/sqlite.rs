//! The SQLite backend: one writer connection (SQLite allows one writer at a time; writers are
//! serialised here instead of retrying on SQLITE_BUSY), a small pool of read-only connections
//! (WAL lets them read while the writer commits), `synchronous=FULL` so a commit is on stable
//! storage before it is acknowledged. [`Sql`] on a `rusqlite` connection runs the seam's
//! statements as written (`?N` is SQLite's own placeholder), each prepared once and cached.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::Error;
use crate::schema::MIGRATIONS;
use crate::sql::{Dialect, Row, Sql, ToVal, Val};

const READERS: usize = 4;

/// A SQLite database file: one writer, a few readers.
pub(crate) struct SqliteDb {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// This process's hold on the file ([`hold`]); declared last, so released after the
    /// connections close.
    _held: std::fs::File,
}

/// How long an open waits for another process to let go of the database (a restart that
/// overlaps the old service's exit).
const HOLD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Hold the database at `path` for this process: an exclusive lock (`flock`) on `<path>-lock`,
/// kept while it is open. The entry cache ([`crate::cache`]) learns of changes only through this
/// process's writer connection, so no other metadata service may write the file meanwhile.
/// Another holder is waited for up to `patience`, then refused with a clear error.
pub(crate) fn hold(path: &Path, patience: std::time::Duration) -> Result<std::fs::File, Error> {
    let mut lock = path.as_os_str().to_owned();
    lock.push("-lock");
    let lock = std::path::PathBuf::from(lock);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| Error::Database(format!("opening {}: {e}", lock.display())))?;
    let deadline = std::time::Instant::now() + patience;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Database(format!(
                    "{} is in use by another metadata service (it holds {}); a SQLite \
                     database is served by one process at a time",
                    path.display(),
                    lock.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Database(format!("locking {}: {e}", lock.display())))
            }
        }
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Apply the migrations not yet applied, up to the first `n`. A database of a newer schema
/// (written by a newer Mobula) is refused.
pub(crate) fn migrate_to(conn: &mut Connection, n: usize) -> Result<(), Error> {
    let applied: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    if applied > MIGRATIONS.len() {
        return Err(Error::NewerSchema {
            found: applied,
            known: MIGRATIONS.len(),
        });
    }
    for (i, text) in MIGRATIONS.iter().enumerate().take(n).skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql)?;
        tx.execute_batch(text).map_err(sql)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    Ok(())
}

impl SqliteDb {
    /// Open (creating and migrating) the database file at `path`.
    pub(crate) fn open(path: &Path) -> Result<SqliteDb, Error> {
        SqliteDb::open_within(path, HOLD_PATIENCE)
    }

    /// [`open`](Self::open), waiting up to `patience` for another holder.
    pub(crate) fn open_within(
        path: &Path,
        patience: std::time::Duration,
    ) -> Result<SqliteDb, Error> {
        let held = hold(path, patience)?;
        let mut writer = Connection::open(path).map_err(sql)?;
        configure(&writer).map_err(sql)?;
        migrate_to(&mut writer, MIGRATIONS.len())?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                Ok(Mutex::new(c))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;
        Ok(SqliteDb {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            _held: held,
        })
    }

    /// The writer connection.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader connection no one is using now, if there is one (never waits).
    pub(crate) fn idle_reader(&self) -> Option<MutexGuard<'_, Connection>> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        (0..self.readers.len()).find_map(|k| {
            match self.readers[(start + k) % self.readers.len()].try_lock() {
                Ok(c) => Some(c),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        })
    }

    /// A reader connection (round robin).
    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run one statement without parameters or results, from `c`'s statement cache.
pub(crate) fn run_cached(c: &Connection, sql: &str) -> Result<(), Error> {
    let mut s = c.prepare_cached(sql).map_err(self::sql)?;
    s.raw_execute().map(drop).map_err(self::sql)
}

/// Map a SQLite error to the metadata error.
pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

struct P<'a>(&'a dyn ToVal);

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self.0.to_val() {
            Val::Null => Value::Null,
            Val::Int(i) => Value::Integer(i),
            Val::Text(s) => Value::Text(s),
            Val::Blob(b) => Value::Blob(b),
        }))
    }
}

fn val(v: ValueRef<'_>) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Int(f as i64),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Val::Blob(b.to_vec()),
    }
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[&dyn ToVal]) -> Result<usize, Error> {
        let mut s = self.prepare_cached(sql).map_err(self::sql)?;
        s.execute(rusqlite::params_from_iter(params.iter().map(|p| P(*p))))
            .map_err(self::sql)
    }

    fn query(&self, sql: &str, params: &[&dyn ToVal]) -> Result<Vec<Row>, Error> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(r);
            Ok(true)
        })?;
        Ok(out)
    }

    fn each(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
        f: &mut dyn FnMut(Row) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut s = self.prepare_cached(sql).map_err(self::sql)?;
        let n = s.column_count();
        let mut rows = s
            .query(rusqlite::params_from_iter(params.iter().map(|p| P(*p))))
            .map_err(self::sql)?;
        while let Some(r) = rows.next().map_err(self::sql)? {
            let row = (0..n)
                .map(|i| r.get_ref(i).map(val))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(self::sql)?;
            if !f(Row(row))? {
                break;
            }
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<(), Error> {
        self.execute_batch(sql).map_err(self::sql)
    }

    /// Run at once, kept prepared: every grouped write opens and releases a savepoint
    /// (`execute_batch` would parse both again for every write).
    fn batch_deferred(&self, sql: &str) -> Result<(), Error> {
        run_cached(self, sql)
    }
}

#[cfg(test)]
mod hold_tests {
    use std::time::Duration;

    use super::SqliteDb;

    /// A database file is served by one process at a time: another open waits for it, is
    /// refused with a clear error when it is not let go, and opens once it is.
    #[test]
    fn a_database_in_use_is_refused_until_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let first = SqliteDb::open(&path).unwrap();
        let e = SqliteDb::open_within(&path, Duration::from_millis(200))
            .err()
            .expect("refused while held")
            .to_string();
        assert!(e.contains("in use by another metadata service"), "{e}");
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = SqliteDb::open_within(&path, Duration::from_secs(10)).unwrap();
        letting_go.join().unwrap();
        drop(second);
        crate::Db::open(&path).unwrap();
    }
}
