//! Buckets (SPEC §8): creating and deleting them, and listing a bucket's keys.
//!
//! A bucket is a directory row (`/a/buckets`, `b`) whose `children` counts its objects; its
//! objects are rows (`/a/buckets/b`, key) — see [`crate::paths`]. Writes, reads and deletes of
//! bucket objects are the namespace's own (`namespace.rs`), so data references, garbage,
//! preconditions and snaplinks behave exactly as for any object.
//!
//! Listing is index range scans of the (parent, name) primary key: a page starts with one seek
//! wherever it starts, and with a delimiter each common prefix costs one seek past all its keys
//! (to [`prefix_successor`] of the prefix), never a walk over them.

use crate::params;
use crate::sql::Sql;
use mobula_http::Code;

use crate::api::*;
use crate::error::Error;
use crate::namespace::{self, get};

/// Create the bucket at `path` (`/a/buckets/b`).
pub fn create(tx: &dyn Sql, path: &str) -> Result<Entry, Error> {
    let (area, name) = split_path(path);
    if !is_bucket(path) || !valid_bucket_name(name) {
        return Err(Error::refused(
            Code::InvalidBucketName,
            format!("{name} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')"),
        ));
    }
    if get(tx, path)?.is_some() {
        return Err(Error::refused(
            Code::BucketAlreadyExists,
            format!("bucket {name} already exists"),
        ));
    }
    if get(tx, area)?.is_none() {
        return Err(Error::refused(
            Code::ResourceNotFound,
            format!("{area} does not exist"),
        ));
    }
    namespace::insert_dir(tx, area, name, now_ms())?;
    namespace::bump_children(tx, path, 1)?;
    get(tx, path)?.ok_or_else(|| Error::internal("bucket vanished"))
}

/// The bucket at `path`, or `BucketNotFound`.
pub fn bucket(conn: &dyn Sql, path: &str) -> Result<Entry, Error> {
    match get(conn, path)? {
        Some(e) if is_bucket(path) && e.kind == Kind::Directory => Ok(e),
        _ => Err(Error::refused(
            Code::BucketNotFound,
            format!("bucket {} does not exist", split_path(path).1),
        )),
    }
}

/// Delete the bucket at `path` if it holds no object.
pub fn delete(tx: &dyn Sql, path: &str) -> Result<(), Error> {
    let b = bucket(tx, path)?;
    if b.children > 0 {
        return Err(Error::refused(
            Code::BucketNotEmpty,
            format!("bucket {} is not empty", b.name),
        ));
    }
    let (area, name) = split_path(path);
    tx.execute(
        "DELETE FROM entries WHERE parent = ?1 AND name = ?2",
        params![area, name],
    )?;
    namespace::bump_children(tx, path, -1)
}

/// The SQL of one seek of a key listing. Parameters: ?1 bucket, ?2 start, ?3 exclusive upper
/// bound or NULL, ?4 limit. `inclusive` says whether `start` itself may be returned.
pub fn list_sql(inclusive: bool, bounded: bool) -> String {
    let cmp = if inclusive { ">=" } else { ">" };
    // The upper bound is written only when there is one: `(?3 IS NULL OR name < ?3)` would not
    // bound the index range, and a prefix's last page would walk every key after the prefix.
    let upper = if bounded { "AND e.name < ?3" } else { "" };
    format!(
        "{} WHERE e.parent = ?1 AND e.name {cmp} ?2 {upper} ORDER BY e.name LIMIT ?4",
        namespace::SELECT
    )
}

/// Where a listing starts: after `start_after` (skipping its whole common prefix when it is
/// one), or at `prefix`.
fn start(q: &KeyQuery) -> (String, bool) {
    let Some(after) = q.start_after.as_deref().filter(|a| *a >= q.prefix.as_str()) else {
        return (q.prefix.clone(), true);
    };
    if let Some(cp) = common_prefix(q, after) {
        if cp == after {
            if let Some(next) = prefix_successor(cp) {
                return (next, true);
            }
        }
    }
    (after.to_string(), false)
}

/// The common prefix `key` rolls up into, if the delimiter occurs in it after the prefix.
fn common_prefix<'k>(q: &KeyQuery, key: &'k str) -> Option<&'k str> {
    if q.delimiter.is_empty() || !key.starts_with(&q.prefix) {
        return None;
    }
    let rest = &key[q.prefix.len()..];
    rest.find(&q.delimiter)
        .map(|i| &key[..q.prefix.len() + i + q.delimiter.len()])
}

/// What a listing does after reading a batch of rows.
enum Then {
    /// Every row was read: another batch if it was full.
    Read,
    /// Seek past a common prefix.
    Seek,
    /// A common prefix with no successor: nothing can follow it.
    End,
    /// The page is full and more follows.
    Truncated,
}

/// One page of the keys of a bucket.
pub fn list(conn: &dyn Sql, q: &KeyQuery) -> Result<KeyPage, Error> {
    bucket(conn, &q.bucket)?;
    let upper = prefix_successor(&q.prefix).filter(|_| !q.prefix.is_empty());
    let limit = q.limit as usize;
    let (mut from, mut inclusive) = start(q);
    let mut items = Vec::new();
    loop {
        let sql_text = list_sql(inclusive, upper.is_some());
        let want = (limit - items.len().min(limit) + 1) as i64;
        let (mut seen, mut then) = (0, Then::Read);
        let at = std::mem::take(&mut from);
        // Rows are read only until the page is full or a common prefix sends the listing
        // past all of its keys (a new seek): the rows after it are never read.
        conn.each(&sql_text, params![q.bucket, at, upper, want], &mut |row| {
            seen += 1;
            if items.len() == limit {
                then = Then::Truncated;
                return Ok(false);
            }
            let e = namespace::row_to_entry(&row)?;
            let key = split_path(&e.path).1.to_string();
            if let Some(cp) = common_prefix(q, &key) {
                let cp = cp.to_string();
                then = match prefix_successor(&cp) {
                    Some(next) => {
                        from = next;
                        inclusive = true;
                        Then::Seek
                    }
                    None => Then::End,
                };
                items.push(KeyItem::Prefix(cp));
                return Ok(false);
            }
            from = key;
            inclusive = false;
            items.push(KeyItem::Object(Box::new(e)));
            Ok(true)
        })?;
        if from.is_empty() {
            from = at;
        }
        match then {
            Then::Truncated => {
                return Ok(KeyPage {
                    items,
                    truncated: true,
                })
            }
            Then::Seek => continue,
            Then::End => break,
            Then::Read => {}
        }
        if (seen as i64) < want {
            break;
        }
    }
    Ok(KeyPage {
        items,
        truncated: false,
    })
}
