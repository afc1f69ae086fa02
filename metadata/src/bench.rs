//! For `benches/` only (hidden from the docs): fill a directory or a bucket straight in SQL and
//! list it, to time a listing page without HTTP in the way.

use crate::error::Error;

use crate::api::{ListPage, ListQuery};
use crate::Db;

/// Create `account` and `n` objectless entries `entry-00000000…` in `/account/stor`, with
/// mtimes 0..n.
pub fn fill(db: &Db, account: &str, n: usize) -> Result<(), Error> {
    db.write(|tx| crate::namespace::create_account(tx, account))?;
    db.write(|tx| {
        let parent = format!("/{account}/stor");
        if tx.dialect() == crate::sql::Dialect::Postgres {
            // One statement (a million round trips would time the network, not the listing).
            tx.execute(
                "INSERT INTO entries (parent, name, kind, mtime)
                 SELECT ?1, 'entry-' || lpad(i::text, 8, '0'), 0, i
                 FROM generate_series(0, ?2 - 1) i",
                crate::params![parent, n as i64],
            )?;
            tx.batch("ANALYZE entries")?;
        } else {
            for i in 0..n {
                tx.execute(
                    "INSERT INTO entries (parent, name, kind, mtime) VALUES (?1, ?2, 0, ?3)",
                    crate::params![parent, format!("entry-{i:08}"), i as i64],
                )?;
            }
        }
        tx.execute(
            "UPDATE entries SET children = ?1 WHERE parent = ?2 AND name = 'stor'",
            crate::params![n as i64, format!("/{account}")],
        )?;
        Ok(())
    })
}

/// One listing page.
pub fn list(db: &Db, q: &ListQuery) -> Result<ListPage, Error> {
    db.read(|c| crate::namespace::list(c, q))
}

/// Create `account`, its bucket `bucket` and `n` keys `dir<i % 100>/key<i>` without data (a
/// listing never reads data), straight in SQL.
pub fn fill_bucket(db: &Db, account: &str, bucket: &str, n: usize) -> Result<(), Error> {
    db.write(|tx| crate::namespace::create_account(tx, account))?;
    let path = format!("/{account}/buckets/{bucket}");
    db.write(|tx| crate::buckets::create(tx, &path))?;
    db.write(|tx| {
        for i in 0..n {
            tx.execute(
                "INSERT INTO entries (parent, name, kind, mtime) VALUES (?1, ?2, 1, ?3)",
                crate::params![path, format!("dir{:02}/key{i:08}", i % 100), i as i64],
            )?;
        }
        tx.execute(
            "UPDATE entries SET children = ?1 WHERE parent = ?2 AND name = ?3",
            crate::params![n as i64, format!("/{account}/buckets"), bucket],
        )?;
        Ok(())
    })
}
