//! Multipart uploads: an upload pins the nodes its parts are written to; committing
//! concatenates the parts (on those nodes) into one new data item that becomes the object.
//!
//! States: `created` → `done` (commit) or `aborted` (abort). Part data is referenced by
//! `upload_parts` until the upload ends, then released to the reclamation queue.

use mobula_http::Code;

use crate::error::Error;
use crate::params;
use crate::sql::Sql;

use crate::api::*;
use crate::namespace::{check_parent, data_at, insert_data, put_object, unref_data};
use crate::paths::prefix_successor;

/// Register a new upload (its `parts` are ignored). The target's parent must exist.
pub fn create(tx: &dyn Sql, u: &Upload) -> Result<(), Error> {
    check_parent(tx, &u.object_path)?;
    tx.execute(
        "INSERT INTO uploads (id, account, object_path, content_type, headers, durability, nodes,
            state, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'created', ?8)",
        params![
            u.id,
            u.account,
            u.object_path,
            u.content_type,
            serde_json::to_string(&u.headers).map_err(Error::internal)?,
            u.durability,
            serde_json::to_string(&u.nodes).map_err(Error::internal)?,
            u.created
        ],
    )?;
    Ok(())
}

/// The upload `id` with its parts, if it exists.
pub fn get(conn: &dyn Sql, id: &str) -> Result<Option<Upload>, Error> {
    let row = conn.query_opt(
        "SELECT id, account, object_path, content_type, headers, durability, nodes, state,
                created, committed_parts FROM uploads WHERE id = ?1",
        params![id],
        |r| {
            Ok(Upload {
                id: r.get(0)?,
                account: r.get(1)?,
                object_path: r.get(2)?,
                content_type: r.get(3)?,
                headers: serde_json::from_str(&r.get::<String>(4)?).unwrap_or_default(),
                durability: r.get::<i64>(5)? as u8,
                nodes: serde_json::from_str(&r.get::<String>(6)?).unwrap_or_default(),
                state: r.get(7)?,
                created: r.get(8)?,
                committed_parts: r
                    .get::<Option<String>>(9)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                parts: Vec::new(),
            })
        },
    )?;
    let Some(mut upload) = row else {
        return Ok(None);
    };
    upload.parts = conn.query_map(
        "SELECT p.n, d.id, d.size, d.md5, d.blake3, d.durability, d.nodes
         FROM upload_parts p JOIN data d ON d.id = p.data_id
         WHERE p.upload_id = ?1 ORDER BY p.n",
        params![id],
        |r| {
            Ok(Part {
                n: r.get(0)?,
                data: data_at(r, 1)?,
            })
        },
    )?;
    Ok(Some(upload))
}

fn get_open(tx: &dyn Sql, id: &str) -> Result<Upload, Error> {
    let u = get(tx, id)?.ok_or_else(|| {
        Error::refused(
            Code::ResourceNotFound,
            format!("upload {id} does not exist"),
        )
    })?;
    if u.state != "created" {
        return Err(Error::refused(
            Code::InvalidUpdate,
            format!("upload {id} is already {}", u.state),
        ));
    }
    Ok(u)
}

/// Record part `n` (replacing an earlier upload of the same part).
pub fn put_part(tx: &dyn Sql, p: &PutPart) -> Result<(), Error> {
    let u = get_open(tx, &p.upload_id)?;
    if p.link {
        let n = tx.execute(
            "UPDATE data SET refs = refs + 1 WHERE id = ?1",
            params![p.data.id],
        )?;
        if n == 0 {
            return Err(Error::refused(
                Code::SourceObjectNotFound,
                "the copied object is gone",
            ));
        }
    } else {
        insert_data(tx, &p.data)?;
    }
    if let Some(old) = u.parts.iter().find(|old| old.n == p.n) {
        unref_data(tx, &old.data.id)?;
    }
    tx.execute(
        "INSERT INTO upload_parts (upload_id, n, data_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (upload_id, n) DO UPDATE SET data_id = excluded.data_id",
        params![p.upload_id, p.n, p.data.id],
    )?;
    Ok(())
}

fn release_parts(tx: &dyn Sql, u: &Upload) -> Result<(), Error> {
    for p in &u.parts {
        unref_data(tx, &p.data.id)?;
    }
    tx.execute(
        "DELETE FROM upload_parts WHERE upload_id = ?1",
        params![&u.id],
    )?;
    Ok(())
}

/// Commit: the concatenated data becomes the target object; the parts are released.
pub fn commit(tx: &dyn Sql, c: &CommitUpload) -> Result<Entry, Error> {
    let u = get_open(tx, &c.upload_id)?;
    let entry = put_object(
        tx,
        &PutObject {
            parents: false,
            path: u.object_path.clone(),
            data: c.data.clone(),
            content_type: u.content_type.clone(),
            headers: {
                let mut h = u.headers.clone();
                h.extend(c.headers.clone());
                h
            },
            preconditions: c.preconditions.clone(),
        },
    )?;
    release_parts(tx, &u)?;
    tx.execute(
        "UPDATE uploads SET state = 'done', committed_parts = ?2 WHERE id = ?1",
        params![
            u.id,
            serde_json::to_string(&c.parts).map_err(Error::internal)?
        ],
    )?;
    Ok(entry)
}

/// Abort: the parts are released.
pub fn abort(tx: &dyn Sql, id: &str) -> Result<(), Error> {
    let u = get_open(tx, id)?;
    release_parts(tx, &u)?;
    tx.execute(
        "UPDATE uploads SET state = 'aborted' WHERE id = ?1",
        params![id],
    )?;
    Ok(())
}

/// A page of open uploads (S3 ListMultipartUploads): parts are left out.
pub fn list(conn: &dyn Sql, q: &UploadQuery) -> Result<Vec<Upload>, Error> {
    // A bound on both ends of the range (`?3 IS NULL OR …` would leave the upper end open and
    // walk every later upload of the account); a prefix always has a successor in practice.
    let upper = prefix_successor(&q.prefix).unwrap_or_else(|| char::MAX.to_string());
    let ids = conn.query_map(
        "SELECT id FROM uploads WHERE account = ?1 AND state = 'created'
         AND object_path >= ?2 AND object_path < ?3
         AND (object_path, id) > (?4, ?5)
         ORDER BY object_path, id LIMIT ?6",
        params![
            q.account,
            q.prefix,
            upper,
            q.after_path,
            q.after_id,
            q.limit
        ],
        |r| r.get::<String>(0),
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(mut u) = get(conn, &id)? {
            u.parts.clear();
            out.push(u);
        }
    }
    Ok(out)
}
