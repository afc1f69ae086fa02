//! The PostgreSQL backend: `tokio-postgres` connections pooled by `deadpool-postgres`, driven
//! from the metadata service's blocking threads through a small runtime of its own (the logic
//! above is synchronous, as it is on SQLite; each statement is awaited here).
//!
//! Invariants: every write transaction first takes one transaction-scoped advisory lock
//! ([`WRITE_LOCK`]), so writes of every metadata process over the database run one after
//! another, as on SQLite, and each sees every write committed before it (read committed is
//! then as strong as serializable for them). Statements are the seam's `?N` SQL, renumbered to
//! `$N` (parameters a statement does not use are left out: PostgreSQL cannot type them) and
//! prepared once per connection. Schema migrations run in one transaction under the same lock,
//! so metadata services starting together migrate once.

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use crate::error::Error;
use crate::schema::{postgres, MIGRATIONS};
use crate::sql::{Dialect, Row, Sql, ToVal, Val};

/// The advisory lock every write transaction takes (ASCII "mobula").
const WRITE_LOCK: i64 = 0x6d6f_6275_6c61;

/// How long a metadata service waits at start for a PostgreSQL that is not up yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// A pool of connections to one PostgreSQL database.
pub(crate) struct PgDb {
    pool: Pool,
    rt: Option<Runtime>,
}

/// One pooled connection (autocommit, or inside `BEGIN` … `COMMIT` for a write).
pub(crate) struct PgConn {
    client: Object,
    rt: Handle,
    /// Statements deferred ([`Sql::batch_deferred`]), sent ahead of the next one in the same
    /// flight (tokio-postgres pipelines requests polled together, in the order polled).
    deferred: std::sync::Mutex<String>,
}

fn db_error(e: tokio_postgres::Error) -> Error {
    Error::Database(format!("PostgreSQL: {}", db_error_text(&e)))
}

/// The server's own message and SQLSTATE when it sent one, else the driver's.
fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// Whether `e` may pass by waiting (the server is not up yet), not a refusal to act on.
fn transient(e: &deadpool_postgres::PoolError) -> bool {
    match e {
        deadpool_postgres::PoolError::Backend(e) => e.as_db_error().is_none_or(|d| {
            // 57P03 cannot_connect_now: starting up or shutting down.
            d.code().code() == "57P03"
        }),
        deadpool_postgres::PoolError::Timeout(_) => true,
        _ => false,
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

impl PgDb {
    /// Connect to `url` (waiting up to a minute for a server that is not up), and migrate.
    pub(crate) fn connect(url: &str) -> Result<PgDb, Error> {
        PgDb::connect_within(url, CONNECT_PATIENCE)
    }

    /// Connect to `url`, waiting up to `patience` for a server that is not up, and migrate.
    pub(crate) fn connect_within(url: &str, patience: Duration) -> Result<PgDb, Error> {
        let shown = redact(url);
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Database(format!("{shown}: not a PostgreSQL URL: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mobula-pg")
            .enable_all()
            .build()
            .map_err(Error::internal)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(Error::internal)?;
        let db = PgDb { pool, rt: Some(rt) };
        let started = Instant::now();
        loop {
            match db.rt().block_on(db.pool.get()) {
                Ok(_) => break,
                Err(e) if transient(&e) && started.elapsed() < patience => {
                    tracing::warn!("PostgreSQL at {shown} is not reachable ({e}); retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) if transient(&e) => {
                    return Err(Error::Database(format!(
                        "PostgreSQL at {shown} is not reachable after {patience:?}: {e}"
                    )));
                }
                Err(e) => {
                    let e = match &e {
                        deadpool_postgres::PoolError::Backend(b) => db_error_text(b),
                        e => e.to_string(),
                    };
                    return Err(Error::Database(format!("PostgreSQL at {shown}: {e}")));
                }
            }
        }
        db.migrate()?;
        Ok(db)
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime lives as long as the pool")
    }

    /// A pooled connection.
    pub(crate) fn conn(&self) -> Result<PgConn, Error> {
        let client = self
            .rt()
            .block_on(self.pool.get())
            .map_err(|e| Error::Database(format!("PostgreSQL: {e}")))?;
        Ok(PgConn {
            client,
            rt: self.rt().handle().clone(),
            deferred: Default::default(),
        })
    }

    /// A connection inside a write transaction holding [`WRITE_LOCK`] (both sent with the
    /// transaction's first statement).
    pub(crate) fn begin(&self) -> Result<PgConn, Error> {
        let c = self.conn()?;
        c.batch_deferred(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))?;
        Ok(c)
    }

    /// Apply the migrations not yet applied; refuse a newer schema.
    fn migrate(&self) -> Result<(), Error> {
        let c = self.begin()?;
        let sql: &dyn Sql = &c;
        // Quiet: every start after the first would log "already exists, skipping".
        sql.batch(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS mobula_schema (version BIGINT NOT NULL)",
        )?;
        let applied: Option<usize> =
            sql.query_opt("SELECT version FROM mobula_schema", crate::params![], |r| {
                r.get(0)
            })?;
        let applied = applied.unwrap_or(0);
        if applied > MIGRATIONS.len() {
            let _ = sql.batch("ROLLBACK");
            return Err(Error::NewerSchema {
                found: applied,
                known: MIGRATIONS.len(),
            });
        }
        for m in &MIGRATIONS[applied..] {
            sql.batch(&postgres(m))?;
        }
        sql.execute("DELETE FROM mobula_schema", crate::params![])?;
        sql.execute(
            "INSERT INTO mobula_schema (version) VALUES (?1)",
            crate::params![MIGRATIONS.len()],
        )?;
        sql.batch("COMMIT")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on an async thread; this does not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `sql` with `?N` renumbered to `$M` in order of first use, and the parameter indexes in
/// that order.
pub(crate) fn translate(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len());
    let mut order: Vec<usize> = Vec::new();
    let mut quoted = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, ch)) = chars.next() {
        if ch == '\'' {
            quoted = !quoted;
        }
        if ch != '?' || quoted {
            out.push(ch);
            continue;
        }
        let mut n = 0usize;
        while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
            n = n * 10 + d.to_digit(10).unwrap_or(0) as usize;
            chars.next();
        }
        let at = match order.iter().position(|&k| k == n - 1) {
            Some(at) => at,
            None => {
                order.push(n - 1);
                order.len() - 1
            }
        };
        out.push_str(&format!("${}", at + 1));
    }
    (out, order)
}

/// A seam value as a PostgreSQL parameter of whatever type the statement gives it.
#[derive(Debug)]
struct P(Val);

impl ToSql for P {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Val::Text(s) => s.to_sql(ty, out),
            Val::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row(r: &tokio_postgres::Row) -> Result<Row, Error> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::Int)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Val::Int(v.into()))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Val::Int(v.into()))),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| Val::Int(v.into()))),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Val::Blob)),
            _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(Val::Text)),
        };
        vals.push(v.map_err(db_error)?.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

impl PgConn {
    /// The deferred statements, now to be sent.
    fn take_deferred(&self) -> String {
        std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `f` (one request on this connection), pipelined behind the deferred statements.
    fn run<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        let before = self.take_deferred();
        self.rt.block_on(async {
            if before.is_empty() {
                return f.await.map_err(db_error);
            }
            let (b, r) = tokio::join!(self.client.batch_execute(&before), f);
            b.map_err(db_error)?;
            r.map_err(db_error)
        })
    }

    fn prepared(
        &self,
        sql: &str,
        params: &[&dyn ToVal],
    ) -> Result<(tokio_postgres::Statement, Vec<P>), Error> {
        let (text, order) = translate(sql);
        let vals = order
            .iter()
            .map(|&k| {
                params
                    .get(k)
                    .map(|p| P(p.to_val()))
                    .ok_or_else(|| Error::internal(format!("no parameter ?{} for {sql}", k + 1)))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let st = self
            .rt
            .block_on(self.client.prepare_cached(&text))
            .map_err(db_error)?;
        Ok((st, vals))
    }
}

fn refs(vals: &[P]) -> Vec<&(dyn ToSql + Sync)> {
    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Sql for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[&dyn ToVal]) -> Result<usize, Error> {
        let (st, vals) = self.prepared(sql, params)?;
        let refs = refs(&vals);
        let n = self.run(self.client.execute(&st, &refs))?;
        Ok(n as usize)
    }

    fn query(&self, sql: &str, params: &[&dyn ToVal]) -> Result<Vec<Row>, Error> {
        let (st, vals) = self.prepared(sql, params)?;
        let refs = refs(&vals);
        let rows = self.run(self.client.query(&st, &refs))?;
        rows.iter().map(row).collect()
    }

    fn batch(&self, sql: &str) -> Result<(), Error> {
        let before = self.take_deferred();
        let all = if before.is_empty() {
            sql.to_string()
        } else {
            format!("{before}; {sql}")
        };
        self.rt
            .block_on(self.client.batch_execute(&all))
            .map_err(db_error)
    }

    fn batch_deferred(&self, sql: &str) -> Result<(), Error> {
        let mut d = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if !d.is_empty() {
            d.push_str("; ");
        }
        d.push_str(sql);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_in_order_of_use_and_unused_ones_dropped() {
        assert_eq!(
            translate("a = ?2 AND b = ?1 AND c = ?2 AND d = '?3' LIMIT ?4"),
            (
                "a = $1 AND b = $2 AND c = $1 AND d = '?3' LIMIT $3".to_string(),
                vec![1, 0, 3]
            )
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
