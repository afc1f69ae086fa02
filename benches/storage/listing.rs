//! Listing a directory of 1,000,000 entries (metadata only, on a real SQLite file, and on
//! PostgreSQL with `MOBULA_BENCH_POSTGRES`): a page must cost the same wherever it starts.

use std::path::Path;
use std::time::Instant;

/// Time listing pages at the start and deep inside a directory of `n` entries (metadata only,
/// on a real SQLite file): the cost of a page must not grow with its position or the directory.
pub fn listing(dir: &Path, n: usize) {
    let db = mobula_metadata::Db::open(&dir.join("listing.db")).unwrap();
    listing_on(&db, "SQLite", n);
    if let Ok(url) = std::env::var("MOBULA_BENCH_POSTGRES") {
        let url = mobula_metadata::testing::fresh_postgres(&url);
        // On a thread of its own: a PostgreSQL Db blocks, and this may be an async context.
        std::thread::spawn(move || {
            listing_on(
                &mobula_metadata::Db::connect(&url).unwrap(),
                "PostgreSQL",
                n,
            )
        })
        .join()
        .unwrap();
    }
}

fn listing_on(db: &mobula_metadata::Db, label: &str, n: usize) {
    use mobula_metadata::api::{ListQuery, SortBy};
    let t = Instant::now();
    mobula_metadata::bench::fill(db, "a", n).unwrap();
    println!(
        "\nlisting on {label}: {n} entries inserted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("| page (limit 1024) | median of 50 |\n|---|---|");
    for (what, marker, sort) in [
        ("first page, by name", None, SortBy::Name),
        (
            "page at entry 500,000, by name",
            Some(format!("entry-{:08}", n / 2)),
            SortBy::Name,
        ),
        (
            "last page, by name",
            Some(format!("entry-{:08}", n - 1000)),
            SortBy::Name,
        ),
        ("first page, by mtime", None, SortBy::Mtime),
        (
            "page at entry 500,000, by mtime",
            Some(format!("entry-{:08}", n / 2)),
            SortBy::Mtime,
        ),
    ] {
        let q = ListQuery {
            path: "/a/stor".into(),
            marker,
            limit: 1024,
            sort,
            reverse: false,
        };
        let mut times: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let page = mobula_metadata::bench::list(db, &q).unwrap();
                assert!(!page.entries.is_empty() && page.total == n as u64);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("| {what} | {:.2} ms |", times[25]);
    }
}
