//! The mixed load: 70% GET / 30% PUT at 16 connections, sizes drawn from an object-size
//! distribution like most object stores see — mostly under 64 KiB, a long tail to 256 MiB:
//! 55% 1–16 KiB, 30% 16–64 KiB, 12% 64 KiB–1 MiB, 2% 1–16 MiB, 1% 128 MiB. The GETs read 100
//! objects written beforehand (untimed) at the same percentiles; the PUTs write new objects.
//! Deterministic: every target gets the same sequence of operations and sizes.

use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::load::{body, cpu, median, p99, Target};

/// The size at percentile `q` (0–99) of the distribution.
fn size(q: u64) -> u64 {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    match q {
        0..55 => K + q * 15 * K / 55,
        55..85 => 16 * K + (q - 55) * 48 * K / 30,
        85..97 => 64 * K + (q - 85) * 960 * K / 12,
        97..99 => M + (q - 97) * 15 * M / 2,
        _ => 128 * M,
    }
}

/// One operation at a time through the sequence `i`: (is a PUT, percentile of its size or of
/// the object it reads).
fn op(i: usize) -> (bool, u64) {
    let put = (i * 7) % 10 < 3;
    let q = if put { (i * 37) % 100 } else { (i * 53) % 100 };
    (put, q as u64)
}

/// Run `ops` mixed operations against every target; print the table.
pub async fn run_all(http: &reqwest::Client, targets: &[&Target], pool: &Bytes, ops: usize) {
    println!(
        "\nmixed load, {ops} operations (70% GET / 30% PUT), 16 clients:\n\
         | system | ops/s | MB/s | p50 | p99 | CPU-s per 1,000 ops |\n|---|---|---|---|---|---|"
    );
    for t in targets {
        let url = |m: &str, k: String| -> reqwest::Url { (t.url)(m, &k).parse().unwrap() };
        let tag = t.label.replace(' ', "_");
        // The objects the GETs read, written first (untimed).
        futures::stream::iter(0..100u64)
            .map(|q| {
                let u = url("PUT", format!("{tag}-mixed-{q}"));
                async move {
                    let r = http
                        .put(u)
                        .header("content-length", size(q))
                        .body(body(size(q), pool, 9_000_000 + q))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "mixed PUT {}", r.status());
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let reqs: Vec<(bool, u64, reqwest::Url)> = (0..ops)
            .map(|i| match op(i) {
                (true, q) => (true, size(q), url("PUT", format!("{tag}-mixed-new-{i}"))),
                (false, q) => (false, size(q), url("GET", format!("{tag}-mixed-{q}"))),
            })
            .collect();
        let cpu0 = cpu(&t.pids);
        let start = Instant::now();
        let done: Vec<(f64, u64)> = futures::stream::iter(reqs.into_iter().enumerate())
            .map(|(i, (put, n, u))| async move {
                let t0 = Instant::now();
                if put {
                    let r = http
                        .put(u)
                        .header("content-length", n)
                        .body(body(n, pool, 8_000_000 + i as u64))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "mixed PUT {}", r.status());
                } else {
                    let r = http.get(u).send().await.unwrap();
                    assert!(r.status().is_success(), "mixed GET {}", r.status());
                    let got = r
                        .bytes_stream()
                        .try_fold(0u64, |a, b| async move { Ok(a + b.len() as u64) })
                        .await
                        .unwrap();
                    assert_eq!(got, n);
                }
                (t0.elapsed().as_secs_f64(), n)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let secs = start.elapsed().as_secs_f64();
        let used = cpu(&t.pids) - cpu0;
        let bytes: u64 = done.iter().map(|d| d.1).sum();
        let lat: Vec<f64> = done.iter().map(|d| d.0).collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {:.2} s |",
            t.label,
            ops as f64 / secs,
            bytes as f64 / secs / 1e6,
            median(lat.clone()) * 1e3,
            p99(lat) * 1e3,
            used / ops as f64 * 1000.0
        );
    }
}
