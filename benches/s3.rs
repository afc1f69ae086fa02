//! S3 benchmark: one Rust load client (reqwest, presigned SigV4 URLs computed here) against
//! Mobula's S3 listener, Mobula's Manta API (same `mobula up` process) and — when built
//! (`cargo install garage --version 2.5.0 --locked --root /var/tmp/garage`) — Garage 2.5 with
//! three nodes on loopback, replication 2, `data_fsync` and `metadata_fsync` on.
//!
//! `cargo bench --bench s3` (`-- --quick` for a short run). Prints ops/s or MB/s per load, the
//! ListObjectsV2-with-delimiter time over 100,000 keys, and the servers' CPU-seconds per 1,000
//! operations (utime + stime of their processes, from /proc).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "s3/garage.rs"]
mod garage;
#[path = "common/load.rs"]
mod load;
#[path = "s3/sigv4.rs"]
mod sigv4;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use load::{free_port, hwm, median, rate, run, Load, Target};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

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
        .args(["--admin-listen", "127.0.0.1:0"])
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
        durability_header: false,
    };
    let manta = Target {
        label: "Mobula Manta",
        url: Box::new(move |_, k| format!("{base}/admin/buckets/bench/objects/{k}")),
        list: None,
        pids: vec![pid],
        durability_header: true,
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
    // `--small-ops N`: the 4 KiB load's operations per round (default 20,000).
    let small_ops: Option<usize> = arg("--small-ops").map(|n| n.parse().expect("--small-ops N"));
    let mut loads = if quick {
        vec![
            Load::new("small", 4096, 1000, 32),
            Load::new("mid", 1 << 20, 128, 32),
            Load::new("big", 64 << 20, 2, 2),
        ]
    } else {
        vec![
            // 20,000: 4,000 GETs lasted under a second a round, and such rounds ranged
            // 0.74–1.08 S3/Manta on an unchanged build.
            Load::new("small", 4096, 20_000, 32),
            Load::new("mid", 1 << 20, 512, 32),
            Load::new("big", 256 << 20, 4, 4),
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
    let pool = load::random_pool();
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
                let m = run(&http, t, l, round, &pool).await;
                let (pr, u) = rate(l, m.put_secs);
                unit = u;
                let (c, cg) = (m.put_cpu + m.get_cpu, m.get_cpu);
                samples[k].push((pr, rate(l, m.get_secs).0, c / (2.0 * l.ops as f64) * 1000.0));
                let (put, get, cpu) = samples[k][round];
                eprintln!(
                    "round {round}, {} via {}: PUT {put:.0}, GET {get:.0} {unit}, \
                     {cpu:.2} CPU-s per 1,000 ops ({:.2} per 1,000 GETs; load client {:.2}); \
                     peak RSS {} MiB",
                    l.name,
                    t.label,
                    cg / l.ops as f64 * 1000.0,
                    m.get_client_cpu / l.ops as f64 * 1000.0,
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
