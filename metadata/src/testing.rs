//! For tests (hidden from the docs): a fresh, empty PostgreSQL schema to run a metadata
//! service in, so tests share one PostgreSQL without seeing each other.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `url` with its connections' search path set to `schema`.
pub fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A fresh, empty schema of the test PostgreSQL: its name.
pub fn fresh_schema(url: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let url = url.to_string();
    let s = schema.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA {s}"))
                .await
                .unwrap();
        })
    })
    .join()
    .unwrap();
    schema
}

/// A URL of the PostgreSQL at `url` whose connections work in a fresh, empty schema.
pub fn fresh_postgres(url: &str) -> String {
    in_schema(url, &fresh_schema(url))
}
