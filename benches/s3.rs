//! S3 benchmark: one Rust load client (reqwest, presigned SigV4 URLs computed here) against
//! Mobula's S3 listener, Mobula's Manta API (same `mobula up` process) and — when built
//! (`cargo install garage --version 2.5.0 --locked --root /var/tmp/garage`) — Garage 2.5 with
//! three nodes on loopback, replication 2, `data_fsync` and `metadata_fsync` on.
//!
//! `cargo bench --bench s3` (`-- --quick` for a short run). Prints ops/s or MB/s per load, the
//! ListObjectsV2-with-delimiter time over 100,000 keys, and the servers' CPU-seconds per 1,000
//! operations (utime + stime of their processes, from /proc).

#[path = "s3/garage.rs"]
mod garage;
#[path = "s3/sigv4.rs"]
mod sigv4;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// Makes an object's URL from (method, name).
pub type ObjectUrl = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Makes a ListObjectsV2 URL from (prefix, delimiter, continuation token).
pub type ListUrl = Box<dyn Fn(&str, &str, &str) -> String + Send + Sync>;

/// Where a load goes: a URL maker for object `name` (PUT or GET) and the processes to charge.
pub struct Target {
    pub label: &'static str,
    /// A presigned (or plain) URL for (method, object name).
    pub url: ObjectUrl,
    /// A presigned ListObjectsV2 (prefix, delimiter, continuation token), for S3 targets.
    pub list: Option<ListUrl>,
    pub pids: Vec<u32>,
}

struct Load {
    name: &'static str,
    size: u64,
    ops: usize,
    concurrency: usize,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) used so far by `pids`.
pub fn cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / 100.0
        })
        .sum()
}

/// Bytes no two PUTs share: every 1 MiB block of every body is a different slice of a random
/// pool. Garage stores blocks by content hash (a block it holds is not written again) and
/// zstd-compresses them, so a body of repeated or constant blocks would cost it nothing.
fn body(size: u64, pool: &Bytes, op: u64) -> reqwest::Body {
    const BLOCK: u64 = 1 << 20;
    let span = pool.len() as u64 - BLOCK;
    let slice = move |k: u64, len: u64| {
        let at = (op
            .wrapping_mul(1_000_003)
            .wrapping_add(k.wrapping_mul(7_919))
            .wrapping_mul(4_099))
            % span;
        pool.slice(at as usize..(at + len) as usize)
    };
    if size <= BLOCK {
        return reqwest::Body::from(slice(0, size));
    }
    let blocks: Vec<Bytes> = (0..size.div_ceil(BLOCK))
        .map(|k| slice(k, BLOCK.min(size - k * BLOCK)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(
        blocks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// A key of its own for every target, load, round and op: the Manta and S3 targets share one
/// bucket, and a PUT over another target's object would pay for reclaiming the old data.
fn name(t: &Target, l: &Load, round: usize, i: usize) -> String {
    format!("{}-{}-{round}-{i}", t.label.replace(' ', "_"), l.name)
}

/// PUTs then GETs of one load: (put secs, get secs, cpu secs of both, cpu secs of the GETs).
async fn run(
    http: &reqwest::Client,
    t: &Target,
    l: &Load,
    round: usize,
    pool: &Bytes,
) -> (f64, f64, f64, f64) {
    // Every URL is signed and parsed before the clock starts: the load client's own signing
    // and parsing (a presigned URL is ~400 bytes) would take CPU from the servers on a
    // two-core machine, and only the servers are measured.
    let urls = |method: &str| -> Vec<reqwest::Url> {
        (0..l.ops)
            .map(|i| (t.url)(method, &name(t, l, round, i)).parse().unwrap())
            .collect()
    };
    let (puts, gets) = (urls("PUT"), urls("GET"));
    // Distinct bodies across targets, rounds and ops.
    let salt = (round as u64 * 3 + t.label.len() as u64) * l.ops as u64;
    let cpu0 = cpu(&t.pids);
    let start = Instant::now();
    futures::stream::iter(puts.into_iter().enumerate())
        .map(|(i, url)| async move {
            let r = http
                .put(url)
                .header("content-length", l.size)
                .body(body(l.size, pool, salt + i as u64))
                .send()
                .await
                .unwrap();
            let st = r.status();
            assert!(
                st.is_success(),
                "PUT {st} {}",
                r.text().await.unwrap_or_default()
            );
        })
        .buffer_unordered(l.concurrency)
        .collect::<Vec<_>>()
        .await;
    let put = start.elapsed().as_secs_f64();
    let cpu_mid = cpu(&t.pids);
    let start = Instant::now();
    futures::stream::iter(gets)
        .map(|url| async move {
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success(), "GET {}", r.status());
            let n = r
                .bytes_stream()
                .try_fold(0u64, |n, b| async move { Ok(n + b.len() as u64) })
                .await
                .unwrap();
            assert_eq!(n, l.size);
        })
        .buffer_unordered(l.concurrency)
        .collect::<Vec<_>>()
        .await;
    let cpu1 = cpu(&t.pids);
    (
        put,
        start.elapsed().as_secs_f64(),
        cpu1 - cpu0,
        cpu1 - cpu_mid,
    )
}

/// Seconds for a ListObjectsV2 walk with delimiter `/` over the whole bucket (the 100 groups),
/// then one group paged through 1,000 keys at a time: (groups secs, keys secs, keys seen).
async fn list(http: &reqwest::Client, t: &Target) -> Option<(f64, f64, usize)> {
    let url = t.list.as_ref()?;
    let start = Instant::now();
    let text = http
        .get(url("", "/", ""))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("<CommonPrefixes>"),
        "{}",
        &text[..text.len().min(300)]
    );
    let groups = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut token = String::new();
    let mut keys = 0;
    loop {
        let text = http
            .get(url("dir07/", "/", &token))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        keys += text.matches("<Key>").count();
        match text.split_once("<NextContinuationToken>") {
            Some((_, rest)) => token = rest.split('<').next().unwrap().to_string(),
            None => break,
        }
    }
    Some((groups, start.elapsed().as_secs_f64(), keys))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of process `pid`, KiB.
fn hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn rate(l: &Load, secs: f64) -> (f64, &'static str) {
    if l.size <= 4096 {
        (l.ops as f64 / secs, "ops/s")
    } else {
        (l.ops as f64 * l.size as f64 / secs / 1e6, "MB/s")
    }
}

/// `mobula up` with its S3 listener, a bucket `bench` holding `keys` listing keys (filled in
/// SQL before it starts); the Manta target, the S3 target and the child.
async fn mobula(dir: &Path, keys: usize) -> (Target, Target, Child) {
    std::fs::create_dir_all(dir.join("metadata")).unwrap();
    let db = mobula_metadata::Db::open(&dir.join("metadata").join("mobula.db")).unwrap();
    mobula_metadata::bench::fill_bucket(&db, "admin", "list", keys).unwrap();
    drop(db);
    let (http_port, s3_port) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args([
            "up",
            "--volume",
            "plain",
            "--no-jobs",
            "--no-auth",
            "--data",
        ])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .args(["--s3-listen", &format!("127.0.0.1:{s3_port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let key_file = dir.join("s3-key");
    for _ in 0..400 {
        if key_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&key_file).expect("mobula up wrote its S3 key");
    let (ak, sk) = text.trim().split_once(' ').unwrap();
    let pid = child.id().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http_port}");
    http.put(format!("{base}/admin/buckets/bench"))
        .send()
        .await
        .unwrap();
    let signer = sigv4::Signer::new(&format!("127.0.0.1:{s3_port}"), ak, sk);
    let s2 = signer.clone();
    let s3 = Target {
        label: "Mobula S3",
        url: Box::new(move |m, k| signer.presign(m, "bench", k, &[])),
        list: Some(Box::new(move |p, d, t| s2.list("list", p, d, t))),
        pids: vec![pid],
    };
    let manta = Target {
        label: "Mobula Manta",
        url: Box::new(move |_, k| format!("{base}/admin/buckets/bench/objects/{k}")),
        list: None,
        pids: vec![pid],
    };
    (manta, s3, child)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    // `--only NAME` keeps one load (small, mid, big) or the listing (list): for profiling, with
    // `--target` below. `--rounds N` (default 3, 1 with --quick) alternates the targets N times.
    let only = arg("--only");
    let rounds: usize = arg("--rounds")
        .map(|r| r.parse().expect("--rounds N"))
        .unwrap_or(if quick { 1 } else { 3 });
    let listing = only.as_deref().is_none_or(|o| o == "list");
    let keys = match (listing, quick) {
        (false, _) => 0,
        (true, true) => 20_000,
        (true, false) => 100_000,
    };
    // `--small-ops N`: the 4 KiB load's operations per round (for profiling its GETs).
    let small_ops: Option<usize> = arg("--small-ops").map(|n| n.parse().expect("--small-ops N"));
    let mut loads = if quick {
        vec![
            Load {
                name: "small",
                size: 4096,
                ops: 1000,
                concurrency: 32,
            },
            Load {
                name: "mid",
                size: 1 << 20,
                ops: 128,
                concurrency: 32,
            },
            Load {
                name: "big",
                size: 64 << 20,
                ops: 2,
                concurrency: 2,
            },
        ]
    } else {
        vec![
            Load {
                name: "small",
                size: 4096,
                ops: 4000,
                concurrency: 32,
            },
            Load {
                name: "mid",
                size: 1 << 20,
                ops: 512,
                concurrency: 32,
            },
            Load {
                name: "big",
                size: 256 << 20,
                ops: 4,
                concurrency: 4,
            },
        ]
    };
    if let Some(n) = small_ops {
        loads[0].ops = n;
    }
    let loads: Vec<Load> = loads
        .into_iter()
        .filter(|l| only.as_deref().is_none_or(|o| o == l.name))
        .collect();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (manta, s3, _child) = mobula(&dir.path().join("mobula"), keys).await;
    // Garage starts only when it is measured: its background work would otherwise take CPU
    // from the Mobula runs at random moments.
    let target = arg("--target");
    let garage = match &target {
        Some(t) if !"Garage 2.5".contains(t.as_str()) => None,
        _ => garage::start(&dir.path().join("garage"), keys).await,
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let pool: Bytes = {
        use rand::RngCore;
        let mut b = vec![0u8; 64 << 20];
        rand::thread_rng().fill_bytes(&mut b);
        b.into()
    };
    let mut targets = vec![&manta, &s3];
    if let Some((g, _)) = &garage {
        targets.push(g);
    }
    // `--target LABEL-PART` (e.g. `S3`, `Manta`, `Garage`) keeps the matching targets.
    if let Some(want) = target {
        targets.retain(|t| t.label.contains(want.as_str()));
    }
    println!(
        "| load | op | {} |",
        targets
            .iter()
            .map(|t| t.label)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(targets.len()));
    for l in &loads {
        // samples[target] = (put rate, get rate, cpu per 1,000 ops) of each round; the targets
        // alternate inside a round so that a slow minute of the machine falls on all of them.
        let mut samples = vec![Vec::new(); targets.len()];
        let mut unit = "";
        for round in 0..rounds {
            for (k, t) in targets.iter().enumerate() {
                let (p, g, c, cg) = run(&http, t, l, round, &pool).await;
                let (pr, u) = rate(l, p);
                unit = u;
                samples[k].push((pr, rate(l, g).0, c / (2.0 * l.ops as f64) * 1000.0));
                let (put, get, cpu) = samples[k][round];
                eprintln!(
                    "round {round}, {} via {}: PUT {put:.0}, GET {get:.0} {unit}, \
                     {cpu:.2} CPU-s per 1,000 ops ({:.2} per 1,000 GETs); peak RSS {} MiB",
                    l.name,
                    t.label,
                    cg / l.ops as f64 * 1000.0,
                    hwm(t.pids[0]) >> 10
                );
            }
        }
        let col = |f: fn(&(f64, f64, f64)) -> f64| -> Vec<f64> {
            samples
                .iter()
                .map(|s| median(s.iter().map(f).collect()))
                .collect()
        };
        let what = format!(
            "{} × {} KiB, {} clients",
            l.ops,
            l.size >> 10,
            l.concurrency
        );
        let fmt = |v: Vec<f64>, u: &str| {
            v.iter()
                .map(|x| format!("{x:.0} {u}"))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        println!("| {what} | PUT | {} |", fmt(col(|s| s.0), unit));
        println!("| {what} | GET | {} |", fmt(col(|s| s.1), unit));
        let cpus = col(|s| s.2).into_iter().map(|c| format!("{c:.2} s"));
        println!(
            "| {what} | CPU-s per 1,000 ops | {} |",
            cpus.collect::<Vec<_>>().join(" | ")
        );
        // Per-round ratios of the second target to the first (S3 / Manta), their median.
        if samples.len() >= 2 && rounds > 1 {
            let ratio = |f: fn(&(f64, f64, f64)) -> f64| {
                let r: Vec<f64> = (0..rounds)
                    .map(|i| f(&samples[1][i]) / f(&samples[0][i]))
                    .collect();
                let (lo, hi) = r
                    .iter()
                    .fold((f64::MAX, 0f64), |(a, b), x| (a.min(*x), b.max(*x)));
                format!("{:.2} ({lo:.2}–{hi:.2})", median(r))
            };
            println!(
                "| {what} | {}/{} per round: PUT {}, GET {} |",
                targets[1].label,
                targets[0].label,
                ratio(|s| s.0),
                ratio(|s| s.1)
            );
        }
    }
    let mut lists = Vec::new();
    for t in targets.iter().filter(|_| listing) {
        let mut runs = Vec::new();
        for _ in 0..5 * rounds {
            runs.extend(list(&http, t).await);
        }
        let walk = |f: fn(&(f64, f64, usize)) -> f64| median(runs.iter().map(f).collect());
        let first = runs.first().map(|r| r.2);
        lists.push(match first.map(|n| (walk(|r| r.0), walk(|r| r.1), n)) {
            Some((g, k, n)) => format!("{:.1} ms (groups), {:.0} ms ({n} keys)", g * 1e3, k * 1e3),
            None => "-".into(),
        });
    }
    if listing {
        println!(
            "| ListObjectsV2 over {keys} keys, delimiter / | list (median of {} walks) | {} |",
            5 * rounds,
            lists.join(" | ")
        );
    }
    // Streams stay streams: the peak resident memory of the whole `mobula up` process (gateway,
    // S3 listener, metadata, three nodes) after every load above, 256 MiB objects included.
    println!(
        "\nmobula up peak RSS (VmHWM) after all loads: {} MiB",
        hwm(manta.pids[0]) >> 10
    );
}
