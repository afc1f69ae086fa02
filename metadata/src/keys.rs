//! Accounts' SSH public keys and S3 access keys. Fingerprints are computed by the caller (the CLI or gateway, which
//! parse keys); this module stores and finds them by either fingerprint.

use mobula_http::Code;

use crate::error::Error;
use crate::params;
use crate::sql::{Row, Sql};

use crate::api::{AccountKey, KeyRef, S3Key};
use crate::namespace::account_exists;

fn row(r: &Row) -> Result<AccountKey, Error> {
    Ok(AccountKey {
        account: r.get(0)?,
        md5: r.get(1)?,
        sha256: r.get(2)?,
        public_key: r.get(3)?,
        created: r.get(4)?,
    })
}

/// Add a key (idempotent) to an existing account.
pub fn add(tx: &dyn Sql, k: &AccountKey) -> Result<(), Error> {
    if !account_exists(tx, &k.account)? {
        return Err(Error::refused(
            Code::AccountDoesNotExist,
            format!("account {} does not exist", k.account),
        ));
    }
    tx.execute(
        "INSERT INTO keys (account, md5, sha256, public_key, created)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        params![k.account, k.md5, k.sha256, k.public_key, k.created],
    )?;
    Ok(())
}

/// The keys of an account.
pub fn list(conn: &dyn Sql, account: &str) -> Result<Vec<AccountKey>, Error> {
    conn.query_map(
        "SELECT account, md5, sha256, public_key, created FROM keys WHERE account = ?1
         ORDER BY created, md5",
        params![account],
        row,
    )
}

/// The key named by `r`, if any.
pub fn get(conn: &dyn Sql, r: &KeyRef) -> Result<Option<AccountKey>, Error> {
    conn.query_opt(
        "SELECT account, md5, sha256, public_key, created FROM keys
         WHERE account = ?1 AND (md5 = ?2 OR sha256 = ?2)",
        params![r.account, r.fingerprint],
        row,
    )
}

/// Remove the key named by `r`.
pub fn remove(tx: &dyn Sql, r: &KeyRef) -> Result<(), Error> {
    let n = tx.execute(
        "DELETE FROM keys WHERE account = ?1 AND (md5 = ?2 OR sha256 = ?2)",
        params![r.account, r.fingerprint],
    )?;
    if n == 0 {
        return Err(Error::refused(
            Code::KeyDoesNotExist,
            format!("account {} has no key {}", r.account, r.fingerprint),
        ));
    }
    Ok(())
}

fn s3_row(r: &Row) -> Result<S3Key, Error> {
    Ok(S3Key {
        access_key: r.get(0)?,
        account: r.get(1)?,
        secret: r.get(2)?,
        created: r.get(3)?,
    })
}

/// Store a new S3 access key of an existing account.
pub fn s3_add(tx: &dyn Sql, k: &S3Key) -> Result<(), Error> {
    if !account_exists(tx, &k.account)? {
        return Err(Error::refused(
            Code::AccountDoesNotExist,
            format!("account {} does not exist", k.account),
        ));
    }
    tx.execute(
        "INSERT INTO s3_keys (access_key, account, secret, created) VALUES (?1, ?2, ?3, ?4)",
        params![k.access_key, k.account, k.secret, k.created],
    )?;
    Ok(())
}

/// The S3 access keys of an account, without their secrets.
pub fn s3_list(conn: &dyn Sql, account: &str) -> Result<Vec<S3Key>, Error> {
    conn.query_map(
        "SELECT access_key, account, '', created FROM s3_keys WHERE account = ?1
         ORDER BY created, access_key",
        params![account],
        s3_row,
    )
}

/// The S3 access key `access_key` with its secret, if any.
pub fn s3_get(conn: &dyn Sql, access_key: &str) -> Result<Option<S3Key>, Error> {
    conn.query_opt(
        "SELECT access_key, account, secret, created FROM s3_keys WHERE access_key = ?1",
        params![access_key],
        s3_row,
    )
}

/// Remove S3 access key `r.fingerprint` of account `r.account`.
pub fn s3_remove(tx: &dyn Sql, r: &KeyRef) -> Result<(), Error> {
    let n = tx.execute(
        "DELETE FROM s3_keys WHERE account = ?1 AND access_key = ?2",
        params![r.account, r.fingerprint],
    )?;
    if n == 0 {
        return Err(Error::refused(
            Code::KeyDoesNotExist,
            format!("account {} has no S3 key {}", r.account, r.fingerprint),
        ));
    }
    Ok(())
}
