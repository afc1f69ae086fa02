//! The metadata schema: its migrations, one list for both backends.
//!
//! Each migration is written once, in the SQL both engines share; [`postgres`] rewrites the
//! few words that differ (column types, `WITHOUT ROWID`). Text columns compare as bytes on
//! both (SQLite's BINARY, PostgreSQL's `COLLATE "C"`), so names and keys sort the same way and
//! listing order and markers agree whichever backend holds them.

/// Schema migrations, applied in order. Written in SQLite's SQL; [`postgres`] gives each in
/// PostgreSQL's. A database counts those applied (SQLite `PRAGMA user_version`, PostgreSQL
/// table `mobula_schema`).
pub(crate) const MIGRATIONS: &[&str] = &[
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
INSERT INTO entries (parent, name, kind, mtime)
    SELECT '/' || name, 'buckets', 0, created FROM accounts WHERE true ON CONFLICT DO NOTHING;
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
    r#"
-- A repair a gateway is working on is handed to no other before `claimed_until` (ms since the
-- epoch; 0: unclaimed): several gateways share the queue, each many repairs at once.
ALTER TABLE repairs ADD COLUMN claimed_until INTEGER NOT NULL DEFAULT 0;
CREATE INDEX repairs_by_age ON repairs (queued);
"#,
    r#"
-- A claim takes the repairs no one has tried (or given back at once) first, oldest first, then
-- those whose claim or retry wait ran out longest ago: one index range however many repairs are
-- claimed or waiting (a claim used to step over all of them, ordered by age alone).
CREATE INDEX repairs_by_claim ON repairs (claimed_until, queued);
"#,
];

/// Migration `sql` in PostgreSQL's SQL: 64-bit integers, byte-order text, no `WITHOUT ROWID`.
pub(crate) fn postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    for line in sql.lines() {
        let (code, comment) = match line.find("--") {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let code = code
            .replace(" WITHOUT ROWID", "")
            .replace(" INTEGER", " BIGINT")
            .replace(" TEXT", " TEXT COLLATE \"C\"")
            .replace(" BLOB", " BYTEA");
        out.push_str(&code);
        out.push_str(comment);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_ddl_has_64_bit_integers_and_byte_order_text() {
        let sql = super::postgres(
            "CREATE TABLE t (\n    a TEXT PRIMARY KEY, -- TEXT here\n    n INTEGER NOT NULL\n) WITHOUT ROWID;",
        );
        assert_eq!(
            sql,
            "CREATE TABLE t (\n    a TEXT COLLATE \"C\" PRIMARY KEY, -- TEXT here\n    n BIGINT NOT NULL\n);\n"
        );
    }
}
