//! Storage benchmark: Mobula (roles as separate release processes: metadata, 3 storage nodes,
//! gateway) beside nginx (static GET with sendfile, `dav_methods PUT`) on the same machine, in
//! the same run, with the same client. Prints MB/s and ops/s and the Mobula/nginx ratios, and the
//! gateway's peak RSS while one large object streams through it.
//!
//! `cargo bench --bench storage` (add `-- --quick` for a short run). nginx comes from Debian
//! (`apt-get install nginx-light`); without it the peer columns are skipped with a note.
//!
//! Mobula acknowledges a PUT only after 2 copies are fsynced on 2 nodes and the metadata commit
//! is fsynced; nginx writes one copy without fsync. The ratios include that difference.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

struct Load {
    name: &'static str,
    size: u64,
    ops: usize,
    concurrency: usize,
}

async fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mobula");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(i) = l.find("http://") {
            url = l[i..].split_whitespace().next().unwrap().to_string();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn start_nginx(dir: &Path) -> Option<(Child, String)> {
    let bin = nginx_binary()?;
    let port = free_port();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("body")).unwrap();
    let conf = format!(
        "user root; worker_processes 2; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; client_max_body_size 0;
  client_body_temp_path {d}/body; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {d}/www;
    location / {{ dav_methods PUT; create_full_put_path on; }} }} }}",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(&url).await.is_ok() {
            return Some((child, url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn body(size: u64, chunk: &Bytes) -> reqwest::Body {
    if size <= chunk.len() as u64 {
        return reqwest::Body::from(chunk.slice(..size as usize));
    }
    let n = size / chunk.len() as u64;
    let c = chunk.clone();
    reqwest::Body::wrap_stream(futures::stream::iter(
        (0..n).map(move |_| Ok::<_, std::io::Error>(c.clone())),
    ))
}

/// Run `ops` PUTs then `ops` GETs of `size` bytes at `concurrency`; returns (put, get) seconds.
async fn run(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    l: &Load,
    chunk: &Bytes,
) -> (f64, f64) {
    let t = Instant::now();
    futures::stream::iter(0..l.ops)
        .map(|i| {
            let url = format!("{base}{prefix}/{}-{i}", l.name);
            async move {
                let r = http
                    .put(url)
                    .header("content-length", l.size)
                    .body(body(l.size, chunk))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "PUT {}", r.status());
            }
        })
        .buffer_unordered(l.concurrency)
        .collect::<Vec<_>>()
        .await;
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures::stream::iter(0..l.ops)
        .map(|i| {
            let url = format!("{base}{prefix}/{}-{i}", l.name);
            async move {
                let r = http.get(url).send().await.unwrap();
                assert!(r.status().is_success());
                let n = r
                    .bytes_stream()
                    .try_fold(0u64, |n, b| async move { Ok(n + b.len() as u64) })
                    .await
                    .unwrap();
                assert_eq!(n, l.size);
            }
        })
        .buffer_unordered(l.concurrency)
        .collect::<Vec<_>>()
        .await;
    (put, t.elapsed().as_secs_f64())
}

fn rate(l: &Load, secs: f64) -> (f64, &'static str) {
    if l.size <= 4096 {
        (l.ops as f64 / secs, "ops/s")
    } else {
        (l.ops as f64 * l.size as f64 / secs / 1e6, "MB/s")
    }
}

fn vm(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Time listing pages at the start and deep inside a directory of `n` entries (metadata only,
/// on a real SQLite file): the cost of a page must not grow with its position or the directory.
fn listing(dir: &Path, n: usize) {
    use mobula_metadata::api::{ListQuery, SortBy};
    let db = mobula_metadata::Db::open(&dir.join("listing.db")).unwrap();
    let t = Instant::now();
    mobula_metadata::bench::fill(&db, "a", n).unwrap();
    println!(
        "\nlisting: {n} entries inserted in {:.1} s",
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
                let page = mobula_metadata::bench::list(&db, &q).unwrap();
                assert!(!page.entries.is_empty() && page.total == n as u64);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("| {what} | {:.2} ms |", times[25]);
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::Builder::new()
        .prefix("mobula-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let (_meta, murl) = spawn(&[
        "metadata",
        "--data",
        &d("meta"),
        "--listen",
        "127.0.0.1:0",
        "--create-account",
        "admin",
    ])
    .await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            spawn(&[
                "storage-node",
                "--data",
                &d(&format!("n{i}")),
                "--metadata",
                &murl,
            ])
            .await
            .0,
        );
    }
    let (gw, gurl) = spawn(&["gateway", "--listen", "127.0.0.1:0", "--metadata", &murl]).await;
    let gw_pid = gw.id().unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    for _ in 0..100 {
        let r = http
            .put(format!("{gurl}/admin/stor/bench"))
            .header("content-type", "application/json; type=directory")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success())
            && http
                .put(format!("{gurl}/admin/stor/bench/probe"))
                .body("x")
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nginx = start_nginx(&dir.path().join("nginx")).await;
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);

    // Gateway memory while one large object streams through it (PUT then GET).
    let big = if quick { 1u64 << 30 } else { 4u64 << 30 };
    let rss_before = vm(gw_pid, "VmRSS:");
    let big_load = Load {
        name: "stream",
        size: big,
        ops: 1,
        concurrency: 1,
    };
    let (bp, bg) = run(&http, &gurl, "/admin/stor/bench", &big_load, &chunk).await;
    let hwm = vm(gw_pid, "VmHWM:");
    println!(
        "gateway RSS: {} MiB before, peak {} MiB after streaming a {} GiB object (PUT {:.0} MB/s, GET {:.0} MB/s)",
        rss_before / 1024,
        hwm / 1024,
        big >> 30,
        big as f64 / bp / 1e6,
        big as f64 / bg / 1e6
    );

    let scale = if quick { 4 } else { 1 };
    let loads = [
        Load {
            name: "4k",
            size: 4096,
            ops: 4000 / scale,
            concurrency: 32,
        },
        Load {
            name: "1m",
            size: 1 << 20,
            ops: 1024 / scale,
            concurrency: 32,
        },
        Load {
            name: "256m",
            size: 256 << 20,
            ops: 8 / scale.min(2),
            concurrency: 4,
        },
    ];
    println!("\n| load | op | Mobula | nginx | Mobula/nginx |\n|---|---|---|---|---|");
    for l in &loads {
        let (mp, mg) = run(&http, &gurl, "/admin/stor/bench", l, &chunk).await;
        let (np, ng) = match &nginx {
            Some((_, nurl)) => run(&http, nurl, "/bench", l, &chunk).await,
            None => (f64::NAN, f64::NAN),
        };
        for (op, m, n) in [("PUT", mp, np), ("GET", mg, ng)] {
            let (mr, unit) = rate(l, m);
            let (nr, _) = rate(l, n);
            println!(
                "| {} × {} B, {} clients | {op} | {mr:.0} {unit} | {nr:.0} {unit} | {:.2} |",
                l.ops,
                l.size,
                l.concurrency,
                mr / nr
            );
        }
    }
    listing(dir.path(), 1_000_000);
    if nginx.is_none() {
        println!("\n(nginx not installed: `apt-get install nginx-light` for the peer columns)");
    }
}
