//! The entry cache: the namespace's point reads (`entry.get`, asked by every GET and HEAD)
//! answered from memory while the rows behind them are unchanged. SQLite only — there this
//! process holds the database's one writer connection, so it sees every change; on PostgreSQL
//! other metadata services write too, and nothing is cached.
//!
//! Invariants:
//! - What the cache holds is what a read of the database would answer now, except for the
//!   writes that have committed but are not yet acknowledged (whose writers are still waiting):
//!   a writer is answered only after its transaction's changes were dropped from the cache
//!   ([`EntryCache::settle`], called by the write transaction after `COMMIT`).
//! - Changes are learned from SQLite itself, not from the Rust code that makes them: temporary
//!   triggers on the writer connection ([`install`]) name every `entries` row inserted, updated
//!   or deleted, and any change to the columns of a `data` row that an entry shows (its nodes,
//!   durability, size, hashes) drops everything. So a new write path cannot forget to
//!   invalidate. (`data` rows are inserted before, and deleted only after, every entry pointing
//!   at them: neither changes what an entry reads.)
//! - A read fills the cache only if no transaction settled between its start and its insert
//!   ([`EntryCache::stamp`]): a read that may have seen the state before a commit never
//!   overwrites what that commit dropped.
//! - Bounded: at [`CAPACITY`] entries it starts over (memory stays flat under any namespace).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use crate::api::Entry;
use crate::paths::{join_path, split_path};

/// The most entries held at once (a few hundred bytes each).
pub(crate) const CAPACITY: usize = 50_000;

/// Entries by path, and what the writer's open transaction has changed.
#[derive(Default)]
pub(crate) struct EntryCache {
    map: Mutex<HashMap<String, Entry>>,
    /// Transactions settled so far.
    settled: AtomicU64,
    /// Changed by the writer's open transaction (filled by its triggers).
    touched: Arc<Mutex<Touched>>,
}

/// What the writer's open transaction did to the rows entries show, in order.
#[derive(Default)]
struct Touched(Vec<Change>);

enum Change {
    /// The `entries` row at this path changed.
    Path(String),
    /// A `data` row's shown columns changed.
    All,
    /// This entry was written (and is what a read answers until a later change).
    Wrote(Box<Entry>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cache's key for `path`: the path the row at `path` reports (a path as asked and the
/// row's own always agree, so a change to the row drops what a read of it put here).
fn key(path: &str) -> String {
    let (parent, name) = split_path(path);
    join_path(parent, name)
}

impl EntryCache {
    /// The entry at `path`, if cached.
    pub(crate) fn get(&self, path: &str) -> Option<Entry> {
        lock(&self.map).get(&key(path)).cloned()
    }

    /// Taken before a read whose answer may be [`put`](Self::put).
    pub(crate) fn stamp(&self) -> u64 {
        self.settled.load(Ordering::SeqCst)
    }

    /// Keep `entry`, read at `path` by a read that began at `stamp`, unless a transaction
    /// settled since (the read may have seen the state before it).
    pub(crate) fn put(&self, path: &str, stamp: u64, entry: &Entry) {
        let mut map = lock(&self.map);
        if self.settled.load(Ordering::SeqCst) != stamp {
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key(path), entry.clone());
    }

    /// The writer's open transaction wrote `entry` (at the end of the write that made it: a
    /// later change in the same transaction still drops it).
    pub(crate) fn wrote(&self, entry: &Entry) {
        lock(&self.touched)
            .0
            .push(Change::Wrote(Box::new(entry.clone())));
    }

    /// The writer's transaction is over: drop what it changed and, if it `committed`, keep the
    /// entries it wrote that nothing changed after.
    pub(crate) fn settle(&self, committed: bool) {
        let Touched(changes) = std::mem::take(&mut *lock(&self.touched));
        let mut map = lock(&self.map);
        for c in changes {
            match c {
                Change::Path(p) => {
                    map.remove(&p);
                }
                Change::All => map.clear(),
                Change::Wrote(e) if committed => {
                    if map.len() >= CAPACITY {
                        map.clear();
                    }
                    map.insert(e.path.clone(), *e);
                }
                Change::Wrote(_) => {}
            }
        }
        self.settled.fetch_add(1, Ordering::SeqCst);
    }

    /// How many entries are held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// Teach the writer connection `conn` to report its changes to `cache`: two functions and
/// temporary triggers (this connection's only; nothing is written to the database's schema).
pub(crate) fn install(conn: &Connection, cache: &EntryCache) -> rusqlite::Result<()> {
    let touched = cache.touched.clone();
    conn.create_scalar_function(
        "mobula_entry_changed",
        2,
        FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            let parent: String = ctx.get(0)?;
            let name: String = ctx.get(1)?;
            lock(&touched)
                .0
                .push(Change::Path(join_path(&parent, &name)));
            Ok(0)
        },
    )?;
    let touched = cache.touched.clone();
    conn.create_scalar_function(
        "mobula_data_changed",
        0,
        FunctionFlags::SQLITE_UTF8,
        move |_ctx| {
            lock(&touched).0.push(Change::All);
            Ok(0)
        },
    )?;
    conn.execute_batch(
        "CREATE TEMP TRIGGER mobula_entry_inserted AFTER INSERT ON main.entries
           BEGIN SELECT mobula_entry_changed(NEW.parent, NEW.name); END;
         CREATE TEMP TRIGGER mobula_entry_updated AFTER UPDATE ON main.entries
           BEGIN SELECT mobula_entry_changed(OLD.parent, OLD.name);
                 SELECT mobula_entry_changed(NEW.parent, NEW.name); END;
         CREATE TEMP TRIGGER mobula_entry_deleted AFTER DELETE ON main.entries
           BEGIN SELECT mobula_entry_changed(OLD.parent, OLD.name); END;
         CREATE TEMP TRIGGER mobula_data_updated AFTER UPDATE ON main.data
           WHEN OLD.nodes IS NOT NEW.nodes OR OLD.durability IS NOT NEW.durability
             OR OLD.size IS NOT NEW.size OR OLD.md5 IS NOT NEW.md5
             OR OLD.blake3 IS NOT NEW.blake3 OR OLD.id IS NOT NEW.id
           BEGIN SELECT mobula_data_changed(); END;",
    )
}

#[cfg(test)]
mod tests {
    use super::CAPACITY;
    use crate::api::*;
    use crate::db::Db;
    use crate::{namespace, params, registry, testdb};

    fn data(id: &str) -> Data {
        Data {
            id: id.repeat(32 / id.len()),
            size: 3,
            md5: format!("md5-{id}"),
            blake3: "b".into(),
            durability: 2,
            nodes: vec!["n1".into(), "n2".into()],
        }
    }

    fn put(db: &Db, path: &str, d: Data) {
        db.write(|tx| {
            namespace::put_object(
                tx,
                &PutObject {
                    parents: true,
                    path: path.into(),
                    data: d,
                    content_type: "text/plain".into(),
                    headers: Headers::new(),
                    preconditions: Preconditions::default(),
                },
            )
        })
        .unwrap();
    }

    const PATHS: &[&str] = &[
        "/a/stor",
        "/a/stor/d",
        "/a/stor/d/x",
        "/a/stor/d/y",
        "/a/stor/z",
    ];

    /// Every path answers from the cache what the database answers now (and is cached after).
    fn agree(db: &Db, when: &str) {
        for p in PATHS {
            let fresh = db.read(|c| namespace::get(c, p)).unwrap();
            assert_eq!(db.entry(p).unwrap(), fresh, "{p} after {when}");
            assert_eq!(db.entry_now(p).unwrap().unwrap(), fresh, "{p} after {when}");
        }
    }

    /// Whatever writes a row an entry shows — each namespace write, a repair moving a copy, a
    /// statement no namespace function makes — the next read answers the new state.
    #[test]
    fn every_write_is_seen_by_the_next_read() {
        let (_dir, db) = testdb::sqlite();
        db.write(|tx| namespace::create_account(tx, "a")).unwrap();
        put(&db, "/a/stor/d/x", data("1"));
        db.write(|tx| {
            namespace::put_link(
                tx,
                &PutLink {
                    path: "/a/stor/d/y".into(),
                    source: "/a/stor/d/x".into(),
                    preconditions: Preconditions::default(),
                },
            )
        })
        .unwrap();
        agree(&db, "the first writes");
        assert!(db.entry_cache().unwrap().len() >= 4);

        put(&db, "/a/stor/d/x", data("2"));
        agree(&db, "an overwrite");
        put(&db, "/a/stor/z", data("3"));
        agree(&db, "a new object (its directory's count)");
        db.write(|tx| {
            namespace::update_metadata(
                tx,
                &UpdateMetadata {
                    path: "/a/stor/d/x".into(),
                    content_type: "image/png".into(),
                    headers: [("m-k".to_string(), "v".to_string())].into_iter().collect(),
                },
            )
        })
        .unwrap();
        agree(&db, "a metadata update");
        let shared = data("1").id;
        db.write(|tx| registry::set_data_nodes(tx, &shared, &["n3".into()]))
            .unwrap();
        agree(&db, "a repair moving the link's copies");
        assert_eq!(
            db.entry("/a/stor/d/y")
                .unwrap()
                .unwrap()
                .data
                .unwrap()
                .nodes,
            ["n3"]
        );
        db.write(|tx| {
            tx.execute(
                "UPDATE entries SET mtime = 7 WHERE parent = ?1 AND name = ?2",
                params!["/a/stor/d", "x"],
            )
        })
        .unwrap();
        agree(&db, "a statement of its own");
        db.write(|tx| {
            namespace::delete(
                tx,
                &DeleteEntry {
                    path: "/a/stor/d/y".into(),
                    preconditions: Preconditions::default(),
                },
            )
        })
        .unwrap();
        agree(&db, "a delete");
        assert_eq!(db.entry("/a/stor/d/y").unwrap(), None);
        // A write that fails changes nothing, and the cache still answers the same.
        let refused = db.write(|tx| {
            namespace::put_object(
                tx,
                &PutObject {
                    parents: false,
                    path: "/a/stor/d/x".into(),
                    data: data("4"),
                    content_type: String::new(),
                    headers: Headers::new(),
                    preconditions: Preconditions {
                        if_match: Some(vec!["no-such-etag".into()]),
                        ..Default::default()
                    },
                },
            )
        });
        assert!(refused.is_err());
        agree(&db, "a refused write");
    }

    /// A read that may have seen the state before a commit does not fill the cache after it.
    #[test]
    fn a_read_overtaken_by_a_commit_is_not_kept() {
        let (_dir, db) = testdb::sqlite();
        db.write(|tx| namespace::create_account(tx, "a")).unwrap();
        put(&db, "/a/stor/x", data("1"));
        let cache = db.entry_cache().unwrap();
        let stamp = cache.stamp();
        let before = db
            .read(|c| namespace::get(c, "/a/stor/x"))
            .unwrap()
            .unwrap();
        put(&db, "/a/stor/x", data("2"));
        cache.put("/a/stor/x", stamp, &before);
        let now = db.entry("/a/stor/x").unwrap().unwrap();
        assert_eq!(now.data.unwrap().md5, "md5-2");
    }

    /// A cached entry is answered with every reader busy (no SQLite read), and the cache
    /// stays bounded.
    #[test]
    fn cached_entries_need_no_reader_and_stay_bounded() {
        let (_dir, db) = testdb::sqlite();
        db.write(|tx| namespace::create_account(tx, "a")).unwrap();
        put(&db, "/a/stor/x", data("1"));
        let want = db.entry("/a/stor/x").unwrap();
        {
            let _busy: Vec<_> = (0..4).map(|_| db.sqlite_reader()).collect();
            assert_eq!(db.entry_now("/a/stor/x").unwrap().unwrap(), want);
            assert!(
                db.entry_now("/a/stor").is_none(),
                "not cached: needs a reader"
            );
        }
        let cache = db.entry_cache().unwrap();
        let e = want.unwrap();
        for i in 0..CAPACITY + 10 {
            cache.put(&format!("/a/stor/{i}"), cache.stamp(), &e);
        }
        assert!(cache.len() <= CAPACITY);
    }

    /// A write's entry is kept — and answered with no reader — only once it committed, and
    /// only if nothing changed it later in the same transaction.
    #[tokio::test]
    async fn a_written_entry_is_kept_only_as_committed() {
        let (_dir, db) = testdb::sqlite();
        let db = std::sync::Arc::new(db);
        db.write(|tx| namespace::create_account(tx, "a")).unwrap();
        let req = |path: &str, id: &str| PutObject {
            parents: true,
            path: path.into(),
            data: data(id),
            content_type: "text/plain".into(),
            headers: [("m-a".to_string(), "b".to_string())].into_iter().collect(),
            preconditions: Preconditions::default(),
        };
        let written = db.put_object(&req("/a/stor/d/x", "1")).await.unwrap();
        {
            let _busy: Vec<_> = (0..4).map(|_| db.sqlite_reader()).collect();
            let cached = db.entry_now("/a/stor/d/x").unwrap().unwrap();
            assert_eq!(cached.as_ref(), Some(&written), "kept by the write itself");
        }
        agree(&db, "a write kept by the cache");

        // Written, then changed by a later statement of the same transaction.
        let cache = db.entry_cache().unwrap();
        db.write(|tx| {
            let e = namespace::put_object(tx, &req("/a/stor/d/x", "2"))?;
            cache.wrote(&e);
            namespace::update_metadata(
                tx,
                &UpdateMetadata {
                    path: "/a/stor/d/x".into(),
                    content_type: "image/png".into(),
                    headers: Headers::new(),
                },
            )
        })
        .unwrap();
        agree(&db, "a write changed later in its transaction");
        assert_eq!(
            db.entry("/a/stor/d/x").unwrap().unwrap().content_type,
            "image/png"
        );

        // Written, then rolled back.
        let failed: Result<(), crate::Error> = db.write(|tx| {
            let e = namespace::put_object(tx, &req("/a/stor/d/y", "3"))?;
            cache.wrote(&e);
            Err(crate::Error::internal("the transaction fails"))
        });
        assert!(failed.is_err());
        agree(&db, "a write rolled back");
        assert_eq!(db.entry("/a/stor/d/y").unwrap(), None);
    }

    /// On PostgreSQL other metadata services write too: nothing is cached.
    #[test]
    fn postgres_caches_nothing() {
        if let Some(db) = testdb::postgres() {
            assert!(db.entry_cache().is_none());
        }
    }
}
