//! Bad input at the backend's edge: a newer schema refused on both backends; PostgreSQL with
//! bad credentials, down at start (retried until it comes up), or not there at all.

use std::time::{Duration, Instant};

use crate::db::Db;
use crate::error::Error;
use crate::namespace;
use crate::params;

#[test]
fn a_newer_schema_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    drop(Db::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    drop(c);
    let e = Db::open(&path).unwrap_err();
    assert!(matches!(e, Error::NewerSchema { found: 999, .. }), "{e}");
    assert!(e.to_string().contains("newer than this build"), "{e}");
}

#[test]
fn a_newer_schema_is_refused_on_postgres() {
    let Some(url) = crate::testdb::postgres_url() else {
        return;
    };
    let url = crate::testing::fresh_postgres(&url);
    let db = Db::connect(&url).unwrap();
    db.write(|tx| namespace::create_account(tx, "a")).unwrap();
    db.write(|tx| tx.execute("UPDATE mobula_schema SET version = ?1", params![999]))
        .unwrap();
    drop(db);
    let e = Db::connect(&url).unwrap_err();
    assert!(matches!(e, Error::NewerSchema { found: 999, .. }), "{e}");
}

#[test]
fn bad_postgres_credentials_fail_at_once_with_the_servers_reason() {
    let Some(url) = crate::testdb::postgres_url() else {
        return;
    };
    let bad = url.replacen("mobula:mobula@", "mobula:wrong@", 1);
    assert_ne!(bad, url, "the test URL is postgres://mobula:mobula@…");
    let t = Instant::now();
    let e = Db::connect(&bad).unwrap_err().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("wrong"), "the password is not shown: {e}");
    assert!(t.elapsed() < Duration::from_secs(5), "not retried");
    let e = Db::connect("postgres://mobula@127.0.0.1:5432/mobula?sslmode=bogus")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a PostgreSQL URL"), "{e}");
}

/// A TCP port that forwards to `to` once `after` has passed (a PostgreSQL that comes up late).
fn late_proxy(to: std::net::SocketAddr, after: Duration) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            loop {
                let (mut a, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = tokio::net::TcpStream::connect(to).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
        });
    });
    port
}

#[test]
fn a_postgres_down_at_start_is_waited_for() {
    let Some(url) = crate::testdb::postgres_url() else {
        return;
    };
    let fresh = crate::testing::fresh_postgres(&url);
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let (host, port) = match (&cfg.get_hosts()[0], cfg.get_ports()[0]) {
        (tokio_postgres::config::Host::Tcp(h), p) => (h.clone(), p),
        _ => panic!("MOBULA_TEST_POSTGRES must name a TCP host"),
    };
    let to = format!("{host}:{port}").parse().unwrap();
    let late = late_proxy(to, Duration::from_secs(3));
    let at = fresh.replacen(&format!(":{port}/"), &format!(":{late}/"), 1);
    let t = Instant::now();
    let db = Db::connect(&at).unwrap();
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    db.write(|tx| namespace::create_account(tx, "late"))
        .unwrap();
}

#[test]
fn a_postgres_that_never_comes_says_so() {
    if crate::testdb::postgres_url().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = crate::pg::PgDb::connect_within(
        &format!("postgres://mobula:secret@127.0.0.1:{port}/mobula"),
        Duration::from_secs(2),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.contains("not reachable"), "{e}");
    assert!(!e.contains("secret"), "{e}");
}
