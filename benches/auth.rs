//! What signature checking costs: the same 4 KiB GET and PUT loads against two `mobula up`
//! clusters started side by side from the release binary — one verifying every request's HTTP
//! Signature (Ed25519, the key `up` generates), one trusting the path (`--no-auth`) — in
//! interleaved rounds (each side first in every other round; the disk settles before each PUT
//! load), 16 concurrent clients. The client signs once per second (the signature covers the
//! Date alone), so what differs between the sides is the gateway's check.
//!
//! `cargo bench --bench auth`. Env: N (requests per round and kind, default 2000), ROUNDS (3).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");
const CONCURRENCY: usize = 16;

/// Start `mobula up`; returns it, its URL and its key file.
async fn up(dir: &std::path::Path, extra: &[&str]) -> (Child, String, String) {
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--s3-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--volume",
            "plain",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .env("HOME", dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut key) = (String::new(), String::new());
    while let Some(l) = lines.next_line().await.unwrap() {
        for kv in l.split_whitespace() {
            if let Some(v) = kv.strip_prefix("MOBULA_URL=") {
                url = v.into();
            }
            if let Some(v) = kv.strip_prefix("MOBULA_KEY=") {
                key = v.into();
            }
        }
        if l.contains("MANTA_URL") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url, key)
}

/// `rq` with `Date` and `Authorization` when there is a signer.
fn signed(
    rq: reqwest::RequestBuilder,
    signer: Option<&Arc<mobula::sign::Signer>>,
) -> reqwest::RequestBuilder {
    let Some(s) = signer else { return rq };
    // One signature per second, as a client that signs the Date alone can do: what is left
    // to measure is the gateway's check.
    static LAST: std::sync::Mutex<(String, String)> =
        std::sync::Mutex::new((String::new(), String::new()));
    let date = httpdate::fmt_http_date(SystemTime::now());
    let auth = {
        let mut last = LAST.lock().unwrap();
        if last.0 != date {
            *last = (date.clone(), s.authorization(&date));
        }
        last.1.clone()
    };
    rq.header("authorization", auth).header("date", date)
}

async fn load(
    http: &reqwest::Client,
    url: &str,
    signer: Option<&Arc<mobula::sign::Signer>>,
    put: bool,
    n: usize,
) -> f64 {
    let body = bytes::Bytes::from(vec![7u8; 4096]);
    let t = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let body = body.clone();
            async move {
                let path = if put {
                    format!("{url}/admin/stor/b/p{}", i % 256)
                } else {
                    format!("{url}/admin/stor/b/g")
                };
                let rq = if put {
                    http.put(path).body(body)
                } else {
                    http.get(path)
                };
                let r = signed(rq, signer).send().await.unwrap();
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await;
            }
        })
        .await;
    n as f64 / t.elapsed().as_secs_f64()
}

/// Let background deletes finish and flush dirty pages before a measured PUT load.
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let _ = Command::new("sync").status().await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("signed"), dir.path().join("open"));
    let (_s, surl, key) = up(&a, &[]).await;
    let (_o, ourl, _) = up(&b, &["--no-auth"]).await;
    let signer = Arc::new(mobula::sign::Signer::from_file(key.as_ref(), "admin").unwrap());
    let http = reqwest::Client::new();
    for (url, s) in [(&surl, Some(&signer)), (&ourl, None)] {
        let rq = http
            .put(format!("{url}/admin/stor/b"))
            .header("content-type", "application/json; type=directory");
        assert!(signed(rq, s).send().await.unwrap().status().is_success());
        load(&http, url, s, true, 300).await; // warm up; creates the objects
        let rq = http
            .put(format!("{url}/admin/stor/b/g"))
            .body(vec![1u8; 4096]);
        assert!(signed(rq, s).send().await.unwrap().status().is_success());
    }
    let mut sums = [0f64; 4];
    for round in 0..rounds {
        // Each side goes first in every other round, and the disk settles before each PUT
        // load: a PUT load leaves overwritten data for its cluster's reclaimer to delete (and
        // fsync) over the next seconds, which would otherwise always land on the side measured
        // second.
        let sides = [(&ourl, None, 0), (&surl, Some(&signer), 1)];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (url, s, k) = sides[i];
            sums[k] += load(&http, url, s, false, n).await;
        }
        for i in order {
            let (url, s, k) = sides[i];
            settle().await;
            sums[2 + k] += load(&http, url, s, true, n / 4).await;
        }
    }
    let r = |x: f64| x / rounds as f64;
    println!("4 KiB, {CONCURRENCY} concurrent clients, {rounds} interleaved rounds");
    println!("| request | unsigned (--no-auth) | signed (Ed25519) | signed / unsigned |");
    println!("|---|---|---|---|");
    println!(
        "| GET | {:.0} ops/s | {:.0} ops/s | {:.2}× |",
        r(sums[0]),
        r(sums[1]),
        sums[1] / sums[0]
    );
    println!(
        "| PUT | {:.0} ops/s | {:.0} ops/s | {:.2}× |",
        r(sums[2]),
        r(sums[3]),
        sums[3] / sums[2]
    );
}
