//! The load client shared by the storage and S3 benchmarks: targets (a URL maker and the server
//! processes to charge), loads, distinct random bodies, the PUT-then-GET run with per-request
//! latencies, and the figures (rates, medians, p99, CPU-seconds from /proc).

#![allow(dead_code)]

use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

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
    /// The target takes Manta's `Durability-Level` header.
    pub durability_header: bool,
}

pub struct Load {
    pub name: &'static str,
    pub size: u64,
    pub ops: usize,
    pub concurrency: usize,
    /// Copies asked for (targets that take `Durability-Level`; others keep their own).
    pub durability: Option<u32>,
}

impl Load {
    pub fn new(name: &'static str, size: u64, ops: usize, concurrency: usize) -> Load {
        Load {
            name,
            size,
            ops,
            concurrency,
            durability: None,
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) used so far by `pids` (their threads included).
/// Flush what is dirty, then wait (up to 30 s) for the machine to go quiet: a half second with
/// both cores ≥ 90% idle — no writeback, no background deletes of the last run (Mobula reclaims
/// deleted copies in the background, one delete after another) — so the next timed load has the
/// machine to itself. A fixed 3 s pause was not always enough: one build's 1 MiB GET ratio
/// swung from 0.36 to 0.61 between runs, its CPU per GET by half.
/// (Its bench declares `common/cpu.rs` as `cpu` beside this module.)
pub async fn settle() {
    // Busy and idle (idle + iowait) ticks of all cores so far.
    fn busy_idle() -> (u64, u64) {
        let f = super::cpu::fields();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        (f.iter().sum::<u64>() - idle, idle)
    }
    tokio::task::spawn_blocking(nix::unistd::sync)
        .await
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while Instant::now() < deadline {
        let (b0, i0) = busy_idle();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (b1, i1) = busy_idle();
        if (i1 - i0) * 10 >= ((b1 - b0) + (i1 - i0)) * 9 {
            return;
        }
    }
    eprintln!("settle: the machine stayed busy for 30 s");
}

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

/// 64 MiB of random bytes, the source of every body.
pub fn random_pool() -> Bytes {
    use rand::RngCore;
    let mut b = vec![0u8; 64 << 20];
    rand::thread_rng().fill_bytes(&mut b);
    b.into()
}

/// Bytes no two PUTs share: every 1 MiB block of every body is a different slice of a random
/// pool. Garage stores blocks by content hash (a block it holds is not written again) and
/// zstd-compresses them, so a body of repeated or constant blocks would cost it nothing.
pub fn body(size: u64, pool: &Bytes, op: u64) -> reqwest::Body {
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

/// A key of its own for every target, load, round and op: targets may share a bucket, and a
/// PUT over another target's object would pay for reclaiming the old data.
pub fn name(t: &Target, l: &Load, round: usize, i: usize) -> String {
    format!("{}-{}-{round}-{i}", t.label.replace(' ', "_"), l.name)
}

/// What one run of a load measured.
pub struct Measured {
    pub put_secs: f64,
    pub get_secs: f64,
    /// Server CPU seconds of the PUTs and of the GETs.
    pub put_cpu: f64,
    pub get_cpu: f64,
    /// The load client's own CPU seconds during the GETs (it shares the machine's cores).
    pub get_client_cpu: f64,
    /// Per-request latencies, seconds.
    pub put_lat: Vec<f64>,
    pub get_lat: Vec<f64>,
}

/// PUTs then GETs of one load against one target.
pub async fn run(
    http: &reqwest::Client,
    t: &Target,
    l: &Load,
    round: usize,
    pool: &Bytes,
) -> Measured {
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
    let durability = l.durability.filter(|_| t.durability_header);
    let cpu0 = cpu(&t.pids);
    let start = Instant::now();
    let put_lat: Vec<f64> = futures::stream::iter(puts.into_iter().enumerate())
        .map(|(i, url)| async move {
            let t0 = Instant::now();
            let mut req = http.put(url).header("content-length", l.size).body(body(
                l.size,
                pool,
                salt + i as u64,
            ));
            if let Some(d) = durability {
                req = req.header("durability-level", d);
            }
            let r = req.send().await.unwrap();
            let st = r.status();
            assert!(
                st.is_success(),
                "PUT {st} {}",
                r.text().await.unwrap_or_default()
            );
            t0.elapsed().as_secs_f64()
        })
        .buffer_unordered(l.concurrency)
        .collect()
        .await;
    let put_secs = start.elapsed().as_secs_f64();
    let cpu_mid = cpu(&t.pids);
    if l.size >= 1 << 20 {
        // What the PUTs left dirty (all of nginx's, which never fsyncs; the loop image's host
        // file under any system's fsync'd copies) is written back before the GETs are timed, so
        // no system's GETs share the CPU with the kernel's writeback of its PUTs.
        settle().await;
    }
    let me = [std::process::id()];
    let client0 = cpu(&me);
    let start = Instant::now();
    let get_lat: Vec<f64> = futures::stream::iter(gets)
        .map(|url| async move {
            let t0 = Instant::now();
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success(), "GET {}", r.status());
            let n = r
                .bytes_stream()
                .try_fold(0u64, |n, b| async move { Ok(n + b.len() as u64) })
                .await
                .unwrap();
            assert_eq!(n, l.size);
            t0.elapsed().as_secs_f64()
        })
        .buffer_unordered(l.concurrency)
        .collect()
        .await;
    let get_secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu(&t.pids);
    let get_client_cpu = cpu(&me) - client0;
    Measured {
        put_secs,
        get_secs,
        put_cpu: cpu_mid - cpu0,
        get_cpu: cpu1 - cpu_mid,
        get_client_cpu,
        put_lat,
        get_lat,
    }
}

/// Delete what [`run`] wrote for `l` in `round` (large loads: the disk is not endless).
pub async fn delete_all(http: &reqwest::Client, t: &Target, l: &Load, round: usize) {
    futures::stream::iter(0..l.ops)
        .map(|i| {
            let url = (t.url)("DELETE", &name(t, l, round, i));
            async move {
                let r = http.delete(url).send().await.unwrap();
                assert!(r.status().is_success(), "DELETE {}", r.status());
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 99th percentile of `v`.
pub fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() * 99).div_ceil(100))
        .saturating_sub(1)
        .min(v.len() - 1)]
}

/// Peak resident memory of process `pid`, KiB.
pub fn hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The rate of `ops` operations of `l` in `secs`: ops/s for small objects, else MB/s.
pub fn rate(l: &Load, secs: f64) -> (f64, &'static str) {
    if l.size <= 4096 {
        (l.ops as f64 / secs, "ops/s")
    } else {
        (l.ops as f64 * l.size as f64 / secs / 1e6, "MB/s")
    }
}
