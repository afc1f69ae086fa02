//! Storage benchmark: Mobula (`mobula up --no-auth`, plain volume, 3 nodes, 2 fsync'd copies)
//! beside nginx (static GET with `sendfile`, DAV PUT, one copy, no fsync) and — when built —
//! Garage 2.5 (three nodes, replication 2, `data_fsync` and `metadata_fsync` on), the same load
//! client for all (`common/load.rs`: distinct random bodies, URLs made before the clock), the
//! targets alternated in `--rounds N` rounds (default 3), medians. Every figure has its p99
//! latency beside it and the servers' CPU-seconds per 1,000 operations (from /proc, every
//! process of the system). Then a mixed load (70% GET / 30% PUT, sizes mostly under 64 KiB with
//! a tail to 256 MiB), the gateway's memory while a 4 GiB object streams through it, and listing
//! pages in a directory of 1,000,000 entries.
//!
//! `cargo bench --bench storage` (`-- --quick` for a short run; `--only 4k|1m|256m|mixed|listing`).
//! With `MOBULA_BENCH_POSTGRES=postgres://…`, Mobula runs a second time with its metadata on
//! PostgreSQL (a column of its own), and the listing runs on both backends.
//! nginx from Debian (`apt-get install nginx-light`), Garage with `cargo install garage
//! --version 2.5.0 --locked --root /var/tmp/garage`; without them their columns are skipped.

#[path = "common/cpu.rs"]
mod cpu;
#[path = "s3/garage.rs"]
mod garage;
#[path = "storage/listing.rs"]
mod listing;
#[path = "common/load.rs"]
mod load;
#[path = "storage/mixed.rs"]
mod mixed;
#[path = "storage/nginx.rs"]
mod nginx;
#[path = "s3/sigv4.rs"]
mod sigv4;

use std::process::Stdio;
use std::time::Duration;

use load::{free_port, hwm, median, p99, rate, run, Load, Target};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// `mobula up` on `dir`; its target (Manta API, `/admin/stor/bench/…`) and the child. With
/// `database`, its metadata there (a `postgres://` URL).
async fn mobula(dir: &std::path::Path, database: Option<&str>) -> (Target, Child) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "up",
            "--volume",
            "plain",
            "--no-jobs",
            "--no-auth",
            "--no-s3",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(database.map(|d| format!("--database={d}")))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mobula up");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let r = http
            .put(format!("{base}/admin/stor/bench"))
            .header("content-type", "application/json; type=directory")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().unwrap();
    let t = Target {
        label: if database.is_some() {
            "Mobula (PostgreSQL)"
        } else {
            "Mobula"
        },
        url: Box::new(move |_, k| format!("{base}/admin/stor/bench/{k}")),
        list: None,
        pids: vec![pid],
        durability_header: true,
    };
    (t, child)
}

/// "rate (p99 ms)" of a target's samples, medians over the rounds.
fn cell(rates: &[f64], p99s: &[f64], unit: &str) -> String {
    format!(
        "{:.0} {unit} (p99 {:.1} ms)",
        median(rates.to_vec()),
        median(p99s.to_vec()) * 1e3
    )
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let only = arg("--only");
    let rounds: usize = arg("--rounds")
        .map(|r| r.parse().expect("--rounds N"))
        .unwrap_or(if quick { 1 } else { 3 });
    let base = std::env::var("DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("mobula-bench")
        .tempdir_in(base)
        .unwrap();
    let (mobula, up) = mobula(&dir.path().join("mobula"), None).await;
    // Mobula again with its metadata on PostgreSQL (MOBULA_BENCH_POSTGRES, a fresh schema).
    let pg_url = std::env::var("MOBULA_BENCH_POSTGRES").ok();
    let on_pg = match &pg_url {
        Some(u) => {
            let url = mobula_metadata::testing::fresh_postgres(u);
            Some(self::mobula(&dir.path().join("mobula-pg"), Some(&url)).await)
        }
        None => None,
    };
    let ng = nginx::start_nginx(&dir.path().join("nginx")).await;
    let nginx_t = ng.as_ref().map(|(c, url)| {
        let url = url.clone();
        Target {
            label: "nginx",
            url: Box::new(move |_, k| format!("{url}/bench/{k}")),
            list: None,
            pids: nginx::pids(c.id().unwrap()),
            durability_header: false,
        }
    });
    let garage = garage::start(&dir.path().join("garage"), 0).await;
    let mut targets: Vec<&Target> = vec![&mobula];
    targets.extend(on_pg.as_ref().map(|(t, _)| t));
    targets.extend(nginx_t.as_ref());
    targets.extend(garage.as_ref().map(|(g, _)| g));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let pool = load::random_pool();

    let scale = if quick { 4 } else { 1 };
    let mut durable1 = Load::new("256m-d1", 256 << 20, 8 / scale.min(2), 4);
    durable1.durability = Some(1);
    let loads = [
        // 20,000: a round of 4,000 small GETs lasted a fifth of a second, too short to time.
        Load::new("4k", 4096, 20_000 / scale, 32),
        Load::new("1m", 1 << 20, 1024 / scale, 32),
        Load::new("256m", 256 << 20, 8 / scale.min(2), 4),
        durable1,
    ];
    let labels: Vec<&str> = targets.iter().map(|t| t.label).collect();
    println!(
        "| load | op | {} | Mobula/nginx |\n|---|---|{}---|",
        labels.join(" | "),
        "---|".repeat(labels.len())
    );
    for l in loads
        .iter()
        .filter(|l| only.as_deref().is_none_or(|o| l.name.starts_with(o)))
    {
        // s[target][round] = (put rate, get rate, put p99, get p99, put cpu, get cpu)
        let mut s = vec![Vec::new(); targets.len()];
        let mut unit = "";
        for round in 0..rounds {
            for (k, t) in targets.iter().enumerate() {
                // Garage keeps its replication: a durability-1 line is Mobula's and nginx's.
                if l.durability.is_some() && t.label.starts_with("Garage") {
                    continue;
                }
                let m = run(&http, t, l, round, &pool).await;
                if l.size >= 1 << 20 {
                    // Keep the disk from filling, and let the deletes (Mobula reclaims in the
                    // background) and the page cache settle before the next run is timed.
                    load::delete_all(&http, t, l, round).await;
                    load::settle().await;
                }
                let (pr, u) = rate(l, m.put_secs);
                unit = u;
                let per_k = |c: f64| c / l.ops as f64 * 1000.0;
                s[k].push((
                    pr,
                    rate(l, m.get_secs).0,
                    p99(m.put_lat),
                    p99(m.get_lat),
                    per_k(m.put_cpu),
                    per_k(m.get_cpu),
                ));
                eprintln!(
                    "round {round}, {} via {}: {:?}",
                    l.name, t.label, s[k][round]
                );
            }
        }
        let what = match l.durability {
            Some(d) => format!(
                "{} × {} KiB, {} clients, {d} copy",
                l.ops,
                l.size >> 10,
                l.concurrency
            ),
            None => format!(
                "{} × {} KiB, {} clients",
                l.ops,
                l.size >> 10,
                l.concurrency
            ),
        };
        type Row = (f64, f64, f64, f64, f64, f64);
        let col = |k: usize, f: fn(&Row) -> f64| -> Vec<f64> { s[k].iter().map(f).collect() };
        let ratio = |f: fn(&Row) -> f64| match labels.iter().position(|l| *l == "nginx") {
            Some(n) if !s[n].is_empty() => {
                let r: Vec<f64> = (0..rounds).map(|i| f(&s[0][i]) / f(&s[n][i])).collect();
                format!("{:.2}", median(r))
            }
            _ => "–".into(),
        };
        for (op, rate_of, p99_of, cpu_of) in [
            (
                "PUT",
                (|r: &Row| r.0) as fn(&Row) -> f64,
                (|r: &Row| r.2) as fn(&Row) -> f64,
                (|r: &Row| r.4) as fn(&Row) -> f64,
            ),
            ("GET", |r: &Row| r.1, |r: &Row| r.3, |r: &Row| r.5),
        ] {
            let cells: Vec<String> = (0..targets.len())
                .map(|k| {
                    if s[k].is_empty() {
                        "–".into()
                    } else {
                        format!(
                            "{}, {:.2} CPU-s/1k",
                            cell(&col(k, rate_of), &col(k, p99_of), unit),
                            median(col(k, cpu_of))
                        )
                    }
                })
                .collect();
            println!(
                "| {what} | {op} | {} | {} |",
                cells.join(" | "),
                ratio(rate_of)
            );
        }
    }
    if only.as_deref().is_none_or(|o| o == "mixed") {
        mixed::run_all(&http, &targets, &pool, if quick { 300 } else { 1000 }).await;
    }
    if only.is_none() {
        // The gateway's memory while one large object streams through it (PUT then GET).
        let big = if quick { 1u64 << 30 } else { 4u64 << 30 };
        let before = hwm(up.id().unwrap());
        let m = run(&http, &mobula, &Load::new("stream", big, 1, 1), 0, &pool).await;
        println!(
            "\n`mobula up` peak RSS: {} MiB before, {} MiB after streaming a {} GiB object \
             (PUT {:.0} MB/s, GET {:.0} MB/s)",
            before >> 10,
            hwm(up.id().unwrap()) >> 10,
            big >> 30,
            big as f64 / m.put_secs / 1e6,
            big as f64 / m.get_secs / 1e6
        );
    }
    if only.as_deref().is_none_or(|o| o == "listing") {
        listing::listing(dir.path(), 1_000_000);
    }
    match ng {
        Some((master, _)) => nginx::stop(master).await,
        None => println!("\n(nginx not installed: `apt-get install nginx-light` for its column)"),
    }
}
