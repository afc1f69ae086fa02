//! Unit tests of buckets: their lifecycle, keys as opaque names, the listing against a model,
//! its query plans (on both backends: [`crate::conformance!`]) and the cost of skipping a
//! common prefix (SQLite virtual-machine steps, so on SQLite).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mobula_http::Code;
use rusqlite::Connection;

use crate::params;
use crate::sql::Sql;

use crate::api::*;
use crate::buckets;
use crate::db::Db;
use crate::namespace;

fn setup(db: &Db) {
    db.write(|tx| namespace::create_account(tx, "a")).unwrap();
    db.write(|tx| buckets::create(tx, "/a/buckets/bkt"))
        .unwrap();
}

fn db() -> (tempfile::TempDir, Db) {
    let (dir, db) = crate::testdb::sqlite();
    setup(&db);
    (dir, db)
}

fn put(db: &Db, key: &str, parents: bool) -> Result<Entry, crate::Error> {
    db.write(|tx| put_tx(tx, key, parents))
}

fn put_tx(tx: &dyn Sql, key: &str, parents: bool) -> Result<Entry, crate::Error> {
    namespace::put_object(
        tx,
        &PutObject {
            parents,
            path: format!("/a/buckets/bkt/objects/{key}"),
            data: Data {
                id: uuid::Uuid::new_v4().simple().to_string(),
                size: 1,
                md5: "m".into(),
                blake3: "b".into(),
                durability: 2,
                nodes: vec!["n1".into()],
            },
            content_type: "text/plain".into(),
            headers: Headers::new(),
            preconditions: Preconditions::default(),
        },
    )
}

fn code<T: std::fmt::Debug>(r: Result<T, crate::Error>) -> Code {
    r.unwrap_err().code()
}

fn bucket_lifecycle_and_opaque_keys(db: &Db) {
    let create = |p: &str| db.write(|tx| buckets::create(tx, p));
    assert_eq!(code(create("/a/buckets/bkt")), Code::BucketAlreadyExists);
    for bad in ["/a/buckets/B_ad", "/a/buckets/ab", "/a/buckets/1.2.3.4"] {
        assert_eq!(code(create(bad)), Code::InvalidBucketName, "{bad}");
    }
    let e = put(db, "x/y//z/", false).unwrap();
    assert_eq!(e.path, "/a/buckets/bkt/objects/x/y//z/");
    assert_eq!(e.name, "x/y//z/");
    put(db, "x", false).unwrap();
    // No directories were made for the slashes; the bucket counts its objects.
    let b = db.read(|c| buckets::bucket(c, "/a/buckets/bkt")).unwrap();
    assert_eq!(b.children, 2);
    assert!(db
        .read(|c| namespace::get(c, "/a/buckets/bkt/objects/x/y"))
        .unwrap()
        .is_none());
    // Writing into a missing bucket never creates it, even with `parents`.
    let missing = db.write(|tx| {
        namespace::put_object(
            tx,
            &PutObject {
                path: "/a/buckets/nope/objects/k".into(),
                ..put_req()
            },
        )
    });
    assert_eq!(code(missing), Code::BucketNotFound);
    assert!(db
        .read(|c| namespace::get(c, "/a/buckets/nope"))
        .unwrap()
        .is_none());
    assert_eq!(
        code(db.write(|tx| namespace::mkdir(tx, "/a/buckets/bkt/objects/d"))),
        Code::InvalidArgument
    );
    // Not empty, then empty.
    assert_eq!(
        code(db.write(|tx| buckets::delete(tx, "/a/buckets/bkt"))),
        Code::BucketNotEmpty
    );
    for k in ["x/y//z/", "x"] {
        db.write(|tx| {
            namespace::delete(
                tx,
                &DeleteEntry {
                    path: format!("/a/buckets/bkt/objects/{k}"),
                    preconditions: Preconditions::default(),
                },
            )
        })
        .unwrap();
    }
    db.write(|tx| buckets::delete(tx, "/a/buckets/bkt"))
        .unwrap();
    assert_eq!(
        code(db.read(|c| buckets::bucket(c, "/a/buckets/bkt"))),
        Code::BucketNotFound
    );
    let area = db
        .read(|c| namespace::get(c, "/a/buckets"))
        .unwrap()
        .unwrap();
    assert_eq!(area.children, 0);
}

fn put_req() -> PutObject {
    PutObject {
        parents: true,
        path: String::new(),
        data: Data {
            id: "d".repeat(32),
            size: 1,
            md5: "m".into(),
            blake3: "b".into(),
            durability: 2,
            nodes: vec!["n1".into()],
        },
        content_type: "text/plain".into(),
        headers: Headers::new(),
        preconditions: Preconditions::default(),
    }
}

/// What S3 answers for a listing, computed over a sorted key set.
fn model(keys: &[String], q: &KeyQuery) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    let mut last_prefix: Option<String> = None;
    let skip_under = q.start_after.clone().filter(|a| {
        !q.delimiter.is_empty()
            && a.starts_with(&q.prefix)
            && a.ends_with(&q.delimiter)
            && a[q.prefix.len()..].find(&q.delimiter)
                == Some(a.len() - q.prefix.len() - q.delimiter.len())
    });
    for k in keys {
        if !k.starts_with(&q.prefix) || q.start_after.as_ref().is_some_and(|a| k <= a) {
            continue;
        }
        if skip_under
            .as_ref()
            .is_some_and(|s| k.starts_with(s.as_str()))
        {
            continue;
        }
        let rest = &k[q.prefix.len()..];
        let item = match (!q.delimiter.is_empty())
            .then(|| rest.find(&q.delimiter))
            .flatten()
        {
            Some(i) => {
                let cp = k[..q.prefix.len() + i + q.delimiter.len()].to_string();
                if last_prefix.as_ref() == Some(&cp) {
                    continue;
                }
                last_prefix = Some(cp.clone());
                format!("P:{cp}")
            }
            None => format!("K:{k}"),
        };
        if out.len() == q.limit as usize {
            return (out, true);
        }
        out.push(item);
    }
    (out, false)
}

fn show(page: &KeyPage) -> Vec<String> {
    page.items
        .iter()
        .map(|i| match i {
            KeyItem::Object(e) => format!("K:{}", e.name),
            KeyItem::Prefix(p) => format!("P:{p}"),
        })
        .collect()
}

fn listing_matches_the_model_page_by_page(db: &Db) {
    let mut keys = Vec::new();
    for i in 0..40 {
        for j in 0..12 {
            keys.push(format!("d{:02}/f{j:02}", i % 7));
            keys.push(format!("d{i:02}/s{}/x{j}", j % 3));
        }
        keys.push(format!("top{i}"));
        keys.push(format!("é{i}/ü"));
    }
    keys.push("d00/".into());
    keys.push("a//b".into());
    keys.sort();
    keys.dedup();
    db.write(|tx| {
        for k in &keys {
            put_tx(tx, k, false)?;
        }
        Ok(())
    })
    .unwrap();
    for prefix in ["", "d0", "d03/", "d03/s1/", "é", "zz"] {
        for delimiter in ["", "/", "s", "//"] {
            for limit in [1, 7, 1000] {
                let mut q = KeyQuery {
                    bucket: "/a/buckets/bkt".into(),
                    prefix: prefix.into(),
                    delimiter: delimiter.into(),
                    start_after: None,
                    limit,
                };
                let mut all = Vec::new();
                let mut expect_all = Vec::new();
                loop {
                    let page = db.read(|c| buckets::list(c, &q)).unwrap();
                    let (want, truncated) = model(&keys, &q);
                    assert_eq!(show(&page), want, "{q:?}");
                    assert_eq!(page.truncated, truncated, "{q:?}");
                    all.extend(show(&page));
                    expect_all.extend(want);
                    if !page.truncated {
                        break;
                    }
                    q.start_after = Some(page.items.last().unwrap().marker().to_string());
                }
                // The pages together are the unpaged listing.
                let whole = model(
                    &keys,
                    &KeyQuery {
                        limit: u32::MAX,
                        start_after: None,
                        ..q.clone()
                    },
                )
                .0;
                assert_eq!(all, whole, "{prefix:?} {delimiter:?} {limit}");
            }
        }
    }
}

fn key_listing_is_an_index_range_scan(db: &Db) {
    for (inclusive, bounded) in [(false, false), (true, false), (false, true), (true, true)] {
        let sql_text = buckets::list_sql(inclusive, bounded);
        let what = format!("inclusive {inclusive} bounded {bounded}");
        let p = params!["/a/buckets/bkt", "m", "n", 10];
        let plan = crate::testdb::assert_range_scan(db, &sql_text, p, &what);
        if db.dialect() == crate::sql::Dialect::Sqlite {
            assert!(
                plan.contains("SEARCH e USING PRIMARY KEY (parent=? AND name>"),
                "{plan}"
            );
            if bounded {
                assert!(
                    plan.contains("AND name<?)"),
                    "both ends bound the range: {plan}"
                );
            }
        }
    }
}

/// SQLite virtual-machine steps `f` takes on `conn` (counted by a progress handler).
fn steps(db: &Db, f: impl FnOnce(&dyn Sql)) -> u64 {
    let conn = db.sqlite_reader();
    let n = Arc::new(AtomicU64::new(0));
    let m = n.clone();
    conn.progress_handler(
        100,
        Some(move || {
            m.fetch_add(1, Ordering::Relaxed);
            false
        }),
    );
    f(&*conn);
    conn.progress_handler(0, None::<fn() -> bool>);
    n.load(Ordering::Relaxed)
}

#[test]
fn a_delimiter_skips_a_common_prefix_in_one_seek() {
    let (_d, db) = db();
    let q = KeyQuery {
        bucket: "/a/buckets/bkt".into(),
        delimiter: "/".into(),
        limit: 100,
        ..KeyQuery::default()
    };
    let cost = |db: &Db| {
        steps(db, |c| {
            let page = buckets::list(c, &q).unwrap();
            assert_eq!(page.items.len(), 3);
        })
    };
    db.write(|tx| {
        for k in ["a", "big/0", "z"] {
            put_tx(tx, k, false)?;
        }
        Ok(())
    })
    .unwrap();
    let small = cost(&db);
    db.write(|tx| {
        for i in 1..20_000 {
            put_tx(tx, &format!("big/{i}"), false)?;
        }
        Ok(())
    })
    .unwrap();
    let big = cost(&db);
    assert!(
        big <= small * 2 + 5,
        "20,000 keys under big/ cost {big} steps, 1 key cost {small}"
    );
    // And a page deep into a bucket costs what the first page costs.
    let deep = |after: Option<&str>| {
        let q = KeyQuery {
            bucket: "/a/buckets/bkt".into(),
            prefix: "big/".into(),
            start_after: after.map(str::to_string),
            limit: 50,
            ..KeyQuery::default()
        };
        steps(&db, |c| drop(buckets::list(c, &q).unwrap()))
    };
    let first = deep(None);
    let later = deep(Some("big/8"));
    assert!(
        later <= first * 2 + 5,
        "first page {first}, deep page {later}"
    );
}

#[test]
fn a_prefixs_last_page_does_not_walk_the_keys_after_it() {
    let (_d, db) = db();
    db.write(|tx| {
        for i in 0..20 {
            put_tx(tx, &format!("a/{i:02}"), false)?;
        }
        Ok(())
    })
    .unwrap();
    let cost = |db: &Db| {
        let q = KeyQuery {
            bucket: "/a/buckets/bkt".into(),
            prefix: "a/".into(),
            limit: 100,
            ..KeyQuery::default()
        };
        steps(db, |c| {
            let page = buckets::list(c, &q).unwrap();
            assert_eq!((page.items.len(), page.truncated), (20, false));
        })
    };
    let alone = cost(&db);
    db.write(|tx| {
        for i in 0..20_000 {
            put_tx(tx, &format!("b/{i}"), false)?;
        }
        Ok(())
    })
    .unwrap();
    let followed = cost(&db);
    assert!(
        followed <= alone * 2 + 5,
        "20 keys under a/ cost {alone} steps alone, {followed} before 20,000 keys under b/"
    );
}

#[test]
fn migration_gives_existing_accounts_a_buckets_area() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let mut c = Connection::open(&path).unwrap();
        crate::sqlite::migrate_to(&mut c, 4).unwrap();
        c.execute_batch(
            "INSERT INTO accounts VALUES ('old', 1);
             INSERT INTO entries (parent, name, kind, mtime) VALUES ('/', 'old', 0, 1);
             INSERT INTO entries (parent, name, kind, mtime) VALUES ('/old', 'stor', 0, 1);
             INSERT INTO entries (parent, name, kind, mtime, data_id) VALUES ('/old/stor', 'f', 1, 1, NULL);
             UPDATE entries SET children = 1 WHERE parent = '/' AND name = 'old';
             UPDATE entries SET children = 1 WHERE parent = '/old' AND name = 'stor';",
        )
        .unwrap();
    }
    let db = Db::open(&path).unwrap();
    let area = db
        .read(|c| namespace::get(c, "/old/buckets"))
        .unwrap()
        .unwrap();
    assert_eq!(area.kind, Kind::Directory);
    let root = db.read(|c| namespace::get(c, "/old")).unwrap().unwrap();
    assert_eq!(root.children, 2);
    let stor = db
        .read(|c| namespace::get(c, "/old/stor"))
        .unwrap()
        .unwrap();
    assert_eq!(stor.children, 1, "existing data untouched");
    assert!(db
        .read(|c| namespace::get(c, "/old/stor/f"))
        .unwrap()
        .is_some());
    db.write(|tx| buckets::create(tx, "/old/buckets/new-bucket"))
        .unwrap();
}

crate::conformance!(
    super::setup;
    bucket_lifecycle_and_opaque_keys,
    listing_matches_the_model_page_by_page,
    key_listing_is_an_index_range_scan,
);
