//! The SQLite database behind the metadata service: schema migrations and connection handling.
//!
//! Invariants: one writer connection (SQLite allows one writer at a time; we serialise writers
//! here instead of retrying on SQLITE_BUSY), a small pool of reader connections (WAL lets them
//! read while the writer commits), `synchronous=FULL` so a commit is on stable storage before it
//! is acknowledged. Every write runs in a `BEGIN IMMEDIATE` transaction — its own
//! ([`Db::write`]) or, from the server, one shared with the writes that arrived together (group
//! commit, [`crate::commit`]).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Error;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL
) WITHOUT ROWID;

-- The namespace. Directories and objects; an object points at its data (links share data).
CREATE TABLE entries (
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,            -- 0 directory, 1 object
    mtime INTEGER NOT NULL,           -- ms since epoch
    children INTEGER NOT NULL DEFAULT 0,
    data_id TEXT,
    content_type TEXT NOT NULL DEFAULT '',
    headers TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (parent, name)
) WITHOUT ROWID;
CREATE INDEX entries_by_mtime ON entries (parent, mtime, name);

-- Stored bytes, reference-counted by entries and upload parts.
CREATE TABLE data (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    blake3 TEXT NOT NULL,
    durability INTEGER NOT NULL,
    nodes TEXT NOT NULL,              -- JSON array of node ids
    refs INTEGER NOT NULL
) WITHOUT ROWID;

-- Data whose last reference is gone, waiting to be deleted from its nodes.
CREATE TABLE garbage (
    data_id TEXT PRIMARY KEY,
    nodes TEXT NOT NULL,
    queued INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    free_bytes INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    object_path TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    durability INTEGER NOT NULL,
    nodes TEXT NOT NULL,
    state TEXT NOT NULL,
    created INTEGER NOT NULL,
    committed_parts TEXT
) WITHOUT ROWID;

CREATE TABLE upload_parts (
    upload_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    data_id TEXT NOT NULL,
    PRIMARY KEY (upload_id, n)
) WITHOUT ROWID;
"#,
    r#"
-- Copies found bad (or missing) on a node, waiting to be re-copied from a good copy.
CREATE TABLE repairs (
    data_id TEXT NOT NULL,
    node TEXT NOT NULL,
    queued INTEGER NOT NULL,
    PRIMARY KEY (data_id, node)
) WITHOUT ROWID;
"#,
    r#"
-- Accounts' SSH public keys, found by either fingerprint.
CREATE TABLE keys (
    account TEXT NOT NULL,
    md5 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (account, md5)
) WITHOUT ROWID;
CREATE INDEX keys_by_sha256 ON keys (account, sha256);
"#,
    r#"
-- How many tasks a node's job agent runs at once (0: no agent).
ALTER TABLE nodes ADD COLUMN slots INTEGER NOT NULL DEFAULT 0;

-- Jobs (SPEC §4). `state` is queued | running | done; the flags are what the user asked for,
-- `consumed` how many inputs the coordinator has taken in, `events` how many it has logged.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    end_requested INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    done INTEGER,
    stats TEXT NOT NULL DEFAULT '{}',
    inputs INTEGER NOT NULL DEFAULT 0,
    consumed INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX jobs_by_state ON jobs (state, created);

-- A job's append-only lists: kind 'in' (inputs as added), 'ev' (the scheduler's event log,
-- replayed after a restart), 'out', 'err', 'fail'.
CREATE TABLE job_records (
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job, kind, seq)
) WITHOUT ROWID;

-- Leases (one coordinator of jobs at a time among several gateways).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Buckets (SPEC §8): every account gets the `buckets` area; a bucket is a directory row under
-- it and its objects are rows whose parent is the bucket (keys may hold '/').
INSERT OR IGNORE INTO entries (parent, name, kind, mtime)
    SELECT '/' || name, 'buckets', 0, created FROM accounts;
UPDATE entries SET children = (SELECT COUNT(*) FROM entries c WHERE c.parent = '/' || entries.name)
    WHERE parent = '/';
"#,
    r#"
-- S3 credentials (SPEC §8): an access key acts as its account. SigV4 needs the secret itself
-- (it is an HMAC key), so it is stored as given; the metadata database is the secret store.
CREATE TABLE s3_keys (
    access_key TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    secret TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX s3_keys_by_account ON s3_keys (account, created);
-- S3 ListMultipartUploads: an account's open uploads by target path.
CREATE INDEX uploads_by_path ON uploads (account, state, object_path, id);
"#,
    r#"
-- Node lifecycle (issue 18): active | draining (no new copies or tasks; its copies are re-made
-- elsewhere, then it may be removed) | dead (silent past the dead-after limit: the same, from
-- the other copies).
ALTER TABLE nodes ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
"#,
];

const READERS: usize = 4;

/// The metadata database: one writer, a few readers.
pub struct Db {
    writer: Mutex<Connection>,
    /// Writes waiting for the next group commit ([`crate::commit`]).
    pending: Mutex<Vec<crate::commit::Job>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Apply the migrations not yet applied, up to the first `n`.
pub(crate) fn migrate_to(conn: &mut Connection, n: usize) -> rusqlite::Result<()> {
    let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(n).skip(applied) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl Db {
    /// Open (creating and migrating) the database file at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                Ok(Mutex::new(c))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Db {
            writer: Mutex::new(writer),
            pending: Mutex::new(Vec::new()),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Run `f` in one immediate write transaction; commit if it returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let out = f(&tx)?;
        tx.commit().map_err(sql)?;
        Ok(out)
    }

    /// The writer connection (held while a batch commits).
    pub(crate) fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes queued for the next group commit.
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, Vec<crate::commit::Job>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a reader connection (a consistent snapshot for one statement).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

/// Map a SQLite error to an internal API error.
pub(crate) fn sql(e: rusqlite::Error) -> Error {
    Error::internal(format!("metadata database: {e}"))
}
