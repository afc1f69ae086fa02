//! Namespace operations: accounts, directories, objects, snaplinks, listing.
//!
//! Invariants kept by every write here, inside one transaction:
//! - an entry's parent exists and is a directory (no implicit parents);
//! - a directory's `children` equals its number of entries (listing totals and the
//!   not-empty check read it instead of counting);
//! - a data row's `refs` equals the entries and upload parts pointing at it; when it reaches zero
//!   the row moves to `garbage` so its copies are deleted from the storage nodes.

use mobula_http::Code;

use crate::error::Error;
use crate::params;
use crate::sql::{Row, Sql};

use crate::api::*;

pub(crate) const SELECT: &str =
    "SELECT e.parent, e.name, e.kind, e.mtime, e.children, e.content_type, e.headers,
    d.id, d.size, d.md5, d.blake3, d.durability, d.nodes
    FROM entries e LEFT JOIN data d ON d.id = e.data_id";

/// The `Data` in columns `at..at + 6` (id, size, md5, blake3, durability, nodes) of a row.
pub(crate) fn data_at(r: &Row, at: usize) -> Result<Data, Error> {
    Ok(Data {
        id: r.get(at)?,
        size: r.get::<i64>(at + 1)? as u64,
        md5: r.get(at + 2)?,
        blake3: r.get(at + 3)?,
        durability: r.get::<i64>(at + 4)? as u8,
        nodes: serde_json::from_str(&r.get::<String>(at + 5)?).unwrap_or_default(),
    })
}

pub(crate) fn row_to_entry(r: &Row) -> Result<Entry, Error> {
    let parent: String = r.get(0)?;
    let name: String = r.get(1)?;
    let kind: i64 = r.get(2)?;
    let headers: String = r.get(6)?;
    let data = match r.get::<Option<String>>(7)? {
        Some(_) => Some(data_at(r, 7)?),
        None => None,
    };
    Ok(Entry {
        path: join_path(&parent, &name),
        name,
        kind: if kind == 0 {
            Kind::Directory
        } else {
            Kind::Object
        },
        mtime: r.get(3)?,
        children: r.get::<i64>(4)? as u64,
        content_type: r.get(5)?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        data,
    })
}

/// The entry at `path`, if any.
pub fn get(conn: &dyn Sql, path: &str) -> Result<Option<Entry>, Error> {
    let (parent, name) = split_path(path);
    conn.query_opt(
        &format!("{SELECT} WHERE e.parent = ?1 AND e.name = ?2"),
        params![parent, name],
        row_to_entry,
    )
}

/// Whether `name` is an account.
pub fn account_exists(conn: &dyn Sql, name: &str) -> Result<bool, Error> {
    conn.exists("SELECT 1 FROM accounts WHERE name = ?1", params![name])
}

/// All account names, sorted.
pub fn accounts(conn: &dyn Sql) -> Result<Vec<String>, Error> {
    conn.query_map("SELECT name FROM accounts ORDER BY name", params![], |r| {
        r.get(0)
    })
}

pub(crate) fn insert_dir(conn: &dyn Sql, parent: &str, name: &str, now: i64) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO entries (parent, name, kind, mtime) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT DO NOTHING",
        params![parent, name, now],
    )?;
    Ok(())
}

/// Names no account may take: the gateway serves these paths itself (`/console/`).
pub const RESERVED_ACCOUNTS: &[&str] = &["console"];

/// Create account `name` and its areas if missing. Returns whether it was created. A name must
/// be `[a-z][a-z0-9_-]{0,63}` and not one of [`RESERVED_ACCOUNTS`].
pub fn create_account(tx: &dyn Sql, name: &str) -> Result<bool, Error> {
    let b = name.as_bytes();
    let valid = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if !valid {
        return Err(Error::refused(
            mobula_http::Code::InvalidArgument,
            format!("{name:?} is not an account name ([a-z][a-z0-9_-]{{0,63}})"),
        ));
    }
    if RESERVED_ACCOUNTS.contains(&name) {
        return Err(Error::refused(
            mobula_http::Code::InvalidArgument,
            format!("{name} is reserved (the gateway serves /{name}/ itself)"),
        ));
    }
    let now = now_ms();
    let created = tx.execute(
        "INSERT INTO accounts (name, created) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![name, now],
    )? > 0;
    let root = join_path("/", name);
    insert_dir(tx, "/", name, now)?;
    for area in AREAS {
        insert_dir(tx, &root, area, now)?;
    }
    tx.execute(
        "UPDATE entries SET children = (SELECT COUNT(*) FROM entries WHERE parent = ?1)
         WHERE parent = '/' AND name = ?2",
        params![root, name],
    )?;
    Ok(created)
}

/// Check that the parent of `path` exists and is a directory.
pub(crate) fn check_parent(conn: &dyn Sql, path: &str) -> Result<(), Error> {
    let (parent, _) = split_path(path);
    if is_bucket(parent) {
        return crate::buckets::bucket(conn, parent).map(|_| ());
    }
    match get(conn, parent)? {
        Some(e) if e.kind == Kind::Directory => Ok(()),
        Some(_) => Err(Error::refused(
            Code::ParentNotDirectory,
            format!("{parent} is not a directory"),
        )),
        None => Err(Error::refused(
            Code::DirectoryDoesNotExist,
            format!("{parent} does not exist"),
        )),
    }
}

pub(crate) fn bump_children(conn: &dyn Sql, path: &str, delta: i64) -> Result<(), Error> {
    let (parent, _) = split_path(path);
    let (pp, pn) = split_path(parent);
    conn.execute(
        "UPDATE entries SET children = children + ?3 WHERE parent = ?1 AND name = ?2",
        params![pp, pn, delta],
    )?;
    Ok(())
}

/// Create directory `path` (idempotent).
pub fn mkdir(tx: &dyn Sql, path: &str) -> Result<(), Error> {
    if in_buckets(path) {
        return Err(Error::refused(
            Code::InvalidArgument,
            format!("{path}: buckets hold no directories (a bucket is made with PUT /:account/buckets/:bucket)"),
        ));
    }
    match get(tx, path)? {
        Some(e) if e.kind == Kind::Directory => return Ok(()),
        Some(_) => {
            return Err(Error::refused(
                Code::InvalidUpdate,
                format!("{path} is an object; delete it before creating a directory there"),
            ))
        }
        None => {}
    }
    check_parent(tx, path)?;
    let (parent, name) = split_path(path);
    insert_dir(tx, parent, name, now_ms())?;
    bump_children(tx, path, 1)
}

/// Drop one reference to data `id`; queue it for deletion when none is left.
pub fn unref_data(tx: &dyn Sql, id: &str) -> Result<(), Error> {
    tx.execute("UPDATE data SET refs = refs - 1 WHERE id = ?1", params![id])?;
    // Already queued (by a writer that did not hear its commit succeed)? Then with the
    // nodes the data is really on.
    let moved = tx.execute(
        "INSERT INTO garbage (data_id, nodes, queued)
             SELECT id, nodes, ?2 FROM data WHERE id = ?1 AND refs <= 0
             ON CONFLICT (data_id) DO UPDATE SET nodes = excluded.nodes",
        params![id, now_ms()],
    )?;
    if moved > 0 {
        tx.execute("DELETE FROM data WHERE id = ?1", params![id])?;
    }
    Ok(())
}

/// Insert a new data row with one reference.
pub fn insert_data(tx: &dyn Sql, d: &Data) -> Result<(), Error> {
    let nodes = serde_json::to_string(&d.nodes).map_err(Error::internal)?;
    tx.execute(
        "INSERT INTO data (id, size, md5, blake3, durability, nodes, refs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)",
        params![d.id, d.size as i64, d.md5, d.blake3, d.durability, nodes],
    )?;
    Ok(())
}

/// Point the object entry at `path` at `data` (already referenced for it), replacing whatever
/// object was there. The entry returned is the one written (not read back: one round trip less,
/// which matters on PostgreSQL).
fn set_object(
    tx: &dyn Sql,
    path: &str,
    data: &Data,
    content_type: &str,
    headers: &Headers,
    pre: &Preconditions,
) -> Result<Entry, Error> {
    let current = get(tx, path)?;
    if let Some(cur) = &current {
        if cur.kind == Kind::Directory {
            return Err(Error::refused(
                Code::OperationNotAllowedOnDirectory,
                format!("{path} is a directory"),
            ));
        }
    } else {
        check_parent(tx, path)?;
    }
    check_preconditions(current.as_ref(), pre)?;
    let (parent, name) = split_path(path);
    let headers_json = serde_json::to_string(headers).map_err(Error::internal)?;
    let mtime = now_ms();
    tx.execute(
        "INSERT INTO entries (parent, name, kind, mtime, data_id, content_type, headers)
         VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)
         ON CONFLICT (parent, name) DO UPDATE SET mtime = excluded.mtime,
            data_id = excluded.data_id, content_type = excluded.content_type,
            headers = excluded.headers",
        params![parent, name, mtime, data.id, content_type, headers_json],
    )?;
    match current.and_then(|c| c.data) {
        Some(old) => unref_data(tx, &old.id)?,
        None => bump_children(tx, path, 1)?,
    }
    Ok(Entry {
        path: join_path(parent, name),
        name: name.to_string(),
        kind: Kind::Object,
        mtime,
        children: 0,
        content_type: content_type.to_string(),
        headers: headers.clone(),
        data: Some(data.clone()),
    })
}

/// Create or atomically replace an object.
pub fn put_object(tx: &dyn Sql, req: &PutObject) -> Result<Entry, Error> {
    if req.parents {
        mkdirs(tx, split_path(&req.path).0)?;
    }
    insert_data(tx, &req.data)?;
    set_object(
        tx,
        &req.path,
        &req.data,
        &req.content_type,
        &req.headers,
        &req.preconditions,
    )
}

/// Create a snaplink: a new entry sharing the source object's data and headers.
pub fn put_link(tx: &dyn Sql, req: &PutLink) -> Result<Entry, Error> {
    let src = match get(tx, &req.source)? {
        Some(e) => e,
        None => {
            return Err(Error::refused(
                Code::SourceObjectNotFound,
                format!("{} does not exist", req.source),
            ))
        }
    };
    let data = match (&src.kind, &src.data) {
        (Kind::Object, Some(d)) => d.clone(),
        _ => {
            return Err(Error::refused(
                Code::LinkNotObject,
                format!("{} is not an object", req.source),
            ))
        }
    };
    tx.execute(
        "UPDATE data SET refs = refs + 1 WHERE id = ?1",
        params![&data.id],
    )?;
    set_object(
        tx,
        &req.path,
        &data,
        &src.content_type,
        &src.headers,
        &req.preconditions,
    )
}

/// Replace an object's stored headers.
pub fn update_metadata(tx: &dyn Sql, req: &UpdateMetadata) -> Result<Entry, Error> {
    match get(tx, &req.path)? {
        Some(e) if e.kind == Kind::Object => {}
        Some(_) => {
            return Err(Error::refused(
                Code::OperationNotAllowedOnDirectory,
                format!("{} is a directory", req.path),
            ))
        }
        None => {
            return Err(Error::refused(
                Code::ResourceNotFound,
                format!("{} does not exist", req.path),
            ))
        }
    }
    let (parent, name) = split_path(&req.path);
    let headers = serde_json::to_string(&req.headers).map_err(Error::internal)?;
    tx.execute(
        "UPDATE entries SET content_type = ?3, headers = ?4, mtime = ?5
         WHERE parent = ?1 AND name = ?2",
        params![parent, name, req.content_type, headers, now_ms()],
    )?;
    get(tx, &req.path)?.ok_or_else(|| Error::internal("entry vanished"))
}

/// Delete an object, link or empty directory.
pub fn delete(tx: &dyn Sql, req: &DeleteEntry) -> Result<(), Error> {
    let cur = get(tx, &req.path)?.ok_or_else(|| {
        Error::refused(
            Code::ResourceNotFound,
            format!("{} does not exist", req.path),
        )
    })?;
    check_preconditions(Some(&cur), &req.preconditions)?;
    if cur.kind == Kind::Directory && cur.children > 0 {
        return Err(Error::refused(
            Code::DirectoryNotEmpty,
            format!("{} is not empty", req.path),
        ));
    }
    let (parent, name) = split_path(&req.path);
    tx.execute(
        "DELETE FROM entries WHERE parent = ?1 AND name = ?2",
        params![parent, name],
    )?;
    if let Some(d) = cur.data {
        unref_data(tx, &d.id)?;
    }
    bump_children(tx, &req.path, -1)
}

/// The SQL of a listing page. Parameters: ?1 parent, ?2 marker name, ?3 marker mtime, ?4 limit.
/// Every variant is one range scan of an index in index order (no sort, no OFFSET).
pub fn list_sql(sort: SortBy, reverse: bool, has_marker: bool) -> String {
    let (key, cmp_fwd, cmp_rev) = match sort {
        SortBy::Name => ("e.name", "e.name >= ?2", "e.name <= ?2"),
        SortBy::Mtime => (
            "e.mtime",
            "(e.mtime, e.name) >= (?3, ?2)",
            "(e.mtime, e.name) <= (?3, ?2)",
        ),
    };
    // Names ascend by default; mtimes descend (newest first) by default.
    let descending = reverse != (sort == SortBy::Mtime);
    let (ord, cmp) = if descending {
        ("DESC", cmp_rev)
    } else {
        ("ASC", cmp_fwd)
    };
    let marker = if has_marker {
        format!("AND {cmp}")
    } else {
        "AND CAST(?2 AS TEXT) IS NULL AND CAST(?3 AS BIGINT) IS NULL".into()
    };
    let order = if sort == SortBy::Mtime {
        format!("{key} {ord}, e.name {ord}")
    } else {
        format!("{key} {ord}")
    };
    format!("{SELECT} WHERE e.parent = ?1 {marker} ORDER BY {order} LIMIT ?4")
}

/// One page of a directory listing. Uses the (parent, name) and (parent, mtime, name) indexes:
/// the cost of a page does not grow with the directory.
pub fn list(conn: &dyn Sql, q: &ListQuery) -> Result<ListPage, Error> {
    let dir = get(conn, &q.path)?.ok_or_else(|| {
        Error::refused(Code::ResourceNotFound, format!("{} does not exist", q.path))
    })?;
    if dir.kind != Kind::Directory {
        return Err(Error::refused(
            Code::InvalidArgument,
            format!("{} is not a directory", q.path),
        ));
    }
    let marker_mtime = match (&q.marker, q.sort) {
        (Some(m), SortBy::Mtime) => {
            let e = get(conn, &join_path(&q.path, m))?.ok_or_else(|| {
                Error::refused(
                    Code::InvalidArgument,
                    format!("marker {m} does not name an entry (required with sort=mtime)"),
                )
            })?;
            Some(e.mtime)
        }
        _ => None,
    };
    let sql_text = list_sql(q.sort, q.reverse, q.marker.is_some());
    let entries = conn.query_map(
        &sql_text,
        params![q.path, q.marker, marker_mtime, q.limit as i64],
        row_to_entry,
    )?;
    Ok(ListPage {
        total: dir.children,
        entries,
    })
}

/// Make directory `path` and any missing parents below the account's root (`mkdir -p`).
/// Nothing is made in the `buckets` area: a bucket is made only on purpose, its keys' slashes
/// are not directories.
pub fn mkdirs(tx: &dyn Sql, path: &str) -> Result<(), Error> {
    if in_buckets(path) {
        return Ok(());
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut at = String::new();
    for (i, p) in parts.iter().enumerate() {
        at.push('/');
        at.push_str(p);
        if i >= 2 {
            mkdir(tx, &at)?;
        }
    }
    Ok(())
}
