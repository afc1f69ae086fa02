//! Test databases on both backends, and [`conformance!`]: one metadata test run on each.
//!
//! SQLite is a fresh file in a temporary directory. PostgreSQL is a fresh schema of the
//! database at `MOBULA_TEST_POSTGRES` (a `postgres://` URL; `.ci/postgres` starts one), so
//! tests run side by side without seeing each other. Without that variable the PostgreSQL half
//! is skipped with a printed reason — and fails under `MOBULA_REQUIRE_PRIVILEGED=1`, as CI
//! runs it.

use crate::db::Db;
use crate::sql::{Dialect, ToVal, Val};

/// A fresh SQLite database (and the directory holding it).
pub(crate) fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("m.db")).unwrap();
    (dir, db)
}

/// The test PostgreSQL's URL, or `None` (skipped with a reason).
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("MOBULA_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("MOBULA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "MOBULA_TEST_POSTGRES is not set (start one with .ci/postgres)"
            );
            eprintln!("skipped: MOBULA_TEST_POSTGRES is not set (start one with .ci/postgres)");
            None
        }
    }
}

/// A fresh PostgreSQL database (a schema of its own), or `None` when there is none to test.
pub(crate) fn postgres() -> Option<Db> {
    let url = postgres_url()?;
    Some(Db::connect(&crate::testing::fresh_postgres(&url)).unwrap())
}

/// Run each named test — a `fn(&Db)` — on SQLite and on PostgreSQL, after `setup`.
#[macro_export]
macro_rules! conformance {
    ($setup:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let (_dir, db) = $crate::testdb::sqlite();
                    $setup(&db);
                    super::$name(&db);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = $crate::testdb::postgres() {
                        $setup(&db);
                        super::$name(&db);
                    }
                }
            )*
        }
    };
}

/// Assert that `sql` (with `params`) runs as index range scans of `entries e`, in index order:
/// no full scan, no sort step. On PostgreSQL the alternatives are priced out first (sequential
/// and bitmap scans, sorts: `enable_… = off`), as its planner prefers them on a table this
/// small: a plan that still holds one shows that no index can serve the query in order.
pub(crate) fn assert_range_scan(db: &Db, sql: &str, params: &[&dyn ToVal], what: &str) -> String {
    assert_range_scan_of(db, sql, params, what, "e")
}

/// [`assert_range_scan`] of a query whose table (SQLite's plan names it) is `alias`.
pub(crate) fn assert_range_scan_of(
    db: &Db,
    sql: &str,
    params: &[&dyn ToVal],
    what: &str,
    alias: &str,
) -> String {
    let plan: Vec<String> = db
        .write(|tx| {
            let explain = match tx.dialect() {
                Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
                Dialect::Postgres => {
                    tx.batch(
                        "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
                         SET LOCAL enable_sort = off",
                    )?;
                    format!("EXPLAIN {sql}")
                }
            };
            let rows = tx.query(&explain, params)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let text = r.0.into_iter().filter_map(|v| match v {
                        Val::Text(t) => Some(t),
                        _ => None,
                    });
                    text.collect::<Vec<_>>().join(" ")
                })
                .collect())
        })
        .unwrap();
    let plan = plan.join(" | ");
    match db.dialect() {
        Dialect::Sqlite => {
            assert!(
                plan.contains(&format!("SEARCH {alias} USING")),
                "{what}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{what}: a sort step: {plan}");
            assert!(
                !plan.contains(&format!("SCAN {alias}")),
                "{what}: a full scan: {plan}"
            );
        }
        Dialect::Postgres => {
            assert!(plan.contains("Index Scan"), "{what}: {plan}");
            assert!(!plan.contains("Sort"), "{what}: a sort step: {plan}");
            assert!(!plan.contains("Seq Scan"), "{what}: a full scan: {plan}");
            assert!(
                !plan.contains("Bitmap"),
                "{what}: not in index order: {plan}"
            );
        }
    }
    plan
}
