//! Cluster benchmark (issue 18): the roles as separate processes — a metadata service (SQLite,
//! or PostgreSQL with `MOBULA_BENCH_POSTGRES`), three storage nodes on plain directories, two
//! gateways — measuring
//! 1. 4 KiB PUT and GET through one gateway, and through both (requests split between them),
//!    rounds alternated, medians;
//! 2. re-replication after a node's death: `SIZE` of 64 MiB objects at durability 2, one node
//!    killed with SIGKILL (gateways declare it dead after 2 s), the time until every object has
//!    two copies again, as MB/s of copies re-made, beside the disk's own copy rate (`cp` of a
//!    1 GiB file and `sync`, on the same filesystem).
//!
//! `cargo bench --bench cluster` (`-- --quick`: 1 GiB instead of 10 GiB, one round).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/load.rs"]
mod load;

use std::process::Stdio;
use std::time::{Duration, Instant};

use load::{free_port, median, rate, run, Load, Target};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

fn role(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        // `MOBULA_BENCH_LOG=warn` (say) shows what the roles log, on stderr.
        .env(
            "RUST_LOG",
            std::env::var("MOBULA_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mobula")
}

async fn rpc(http: &reqwest::Client, meta: &str, method: &str) -> serde_json::Value {
    let r = http
        .post(format!("{meta}/rpc/{method}"))
        .body("null")
        .send()
        .await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { 3 };
    let base = std::env::var("DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("mobula-cluster")
        .tempdir_in(base)
        .unwrap();
    let d = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let meta = format!("127.0.0.1:{}", free_port());
    let murl = format!("http://{meta}");
    let database = match std::env::var("MOBULA_BENCH_POSTGRES") {
        Ok(u) => mobula_metadata::testing::fresh_postgres(&u),
        Err(_) => format!("sqlite:{}", d("meta/mobula.db")),
    };
    let backend = if database.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let _meta = role(&["metadata", "--database", &database, "--listen", &meta]);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mut nodes: Vec<Child> = (0..3)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", free_port());
            role(&[
                "storage-node",
                "--data",
                &d(&format!("node{i}")),
                "--metadata",
                &murl,
                "--listen",
                &listen,
                "--no-jobs",
            ])
        })
        .collect();
    let gws: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let _gw: Vec<Child> = gws
        .iter()
        .map(|g| {
            role(&[
                "gateway",
                "--metadata",
                &murl,
                "--listen",
                g,
                "--dead-after",
                "2s",
                "--repair-rate",
                "100G",
            ])
        })
        .collect();
    // Up: the account, and a directory through each gateway.
    let t = Instant::now();
    loop {
        let _ = http
            .post(format!("{murl}/rpc/account.create"))
            .body(r#"{"name":"admin"}"#)
            .send()
            .await;
        let n = rpc(&http, &murl, "node.list").await;
        let mut ok = n.as_array().is_some_and(|n| n.len() == 3);
        for g in &gws {
            let r = http
                .put(format!("http://{g}/admin/stor/bench"))
                .header("content-type", "application/json; type=directory")
                .send()
                .await;
            ok &= r.is_ok_and(|r| r.status().is_success());
            // And a PUT: the gateway sees healthy nodes.
            let r = http
                .put(format!("http://{g}/admin/stor/bench/probe"))
                .body("x")
                .send()
                .await;
            ok &= r.is_ok_and(|r| r.status().is_success());
        }
        if ok {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "cluster not up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pool = load::random_pool();
    let target = |label: &'static str, gws: Vec<String>| Target {
        label,
        url: Box::new(move |_, k| {
            let g = &gws[k.bytes().map(usize::from).sum::<usize>() % gws.len()];
            format!("http://{g}/admin/stor/bench/{k}")
        }),
        list: None,
        pids: Vec::new(),
        durability_header: true,
    };
    let one = target("one gateway", vec![gws[0].clone()]);
    let two = target("two gateways", gws.clone());
    let l = Load::new("4k", 4096, if quick { 1000 } else { 4000 }, 32);
    let mut s = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (k, t) in [&one, &two].into_iter().enumerate() {
            let m = run(&http, t, &l, round, &pool).await;
            s[k].push((rate(&l, m.put_secs).0, rate(&l, m.get_secs).0));
        }
    }
    println!("metadata on {backend}\n\n| 4 KiB | one gateway | two gateways |\n|---|---|---|");
    for (op, f) in [("PUT", 0), ("GET", 1)] {
        let m = |k: usize| {
            median(
                s[k].iter()
                    .map(|p| if f == 0 { p.0 } else { p.1 })
                    .collect(),
            )
        };
        println!("| {op} | {:.0} ops/s | {:.0} ops/s |", m(0), m(1));
    }

    // Re-replication after a node's death.
    let size: u64 = if quick { 1 << 30 } else { 10 << 30 };
    let objects = (size >> 26) as usize;
    let big = Load::new("re", 64 << 20, objects, 4);
    run(&http, &one, &big, 0, &pool).await;
    let held = |_: ()| async {
        let t = Instant::now();
        loop {
            let s = rpc(&http, &murl, "cluster.summary").await;
            if s["under_replicated"] == 0 && s["repairs"] == 0 {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    held(()).await;
    let nodes_list = rpc(&http, &murl, "node.list").await;
    let victim = nodes_list[0]["id"].as_str().unwrap().to_string();
    let copies_on = |id: String| {
        let http = http.clone();
        let murl = murl.clone();
        async move {
            let r = http
                .post(format!("{murl}/rpc/node.copies"))
                .body(format!(r#"{{"name":"{id}"}}"#))
                .send()
                .await
                .unwrap();
            r.json::<u64>().await.unwrap()
        }
    };
    let copies = copies_on(victim.clone()).await;
    let url = nodes_list[0]["url"].as_str().unwrap().to_string();
    // Kill the node whose URL the registry lists first.
    let port = url.rsplit(':').next().unwrap().to_string();
    // The bytes to re-make: what the node's directory holds.
    let mut bytes = 0;
    for n in nodes.iter_mut() {
        let pid = n.id().unwrap();
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let listen = format!("127.0.0.1:{port}");
        if cmd.split('\0').any(|a| a == listen) {
            let data = cmd
                .split('\0')
                .skip_while(|a| *a != "--data")
                .nth(1)
                .unwrap();
            let du = std::process::Command::new("du")
                .args(["-sb", data])
                .output()
                .unwrap();
            bytes = String::from_utf8_lossy(&du.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            n.kill().await.unwrap();
        }
    }
    let t = Instant::now();
    // Polled twice a second: each poll is a scan of every data row, on the same cores.
    while copies_on(victim.clone()).await > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    held(()).await;
    let secs = t.elapsed().as_secs_f64();
    // The disk's own copy rate: 1 GiB file copied and synced, same filesystem.
    let src = dir.path().join("copy-src");
    std::fs::write(&src, vec![7u8; 1 << 30]).unwrap();
    std::process::Command::new("sync").status().unwrap();
    let c = Instant::now();
    std::process::Command::new("cp")
        .arg(&src)
        .arg(dir.path().join("copy-dst"))
        .status()
        .unwrap();
    std::process::Command::new("sync").status().unwrap();
    let disk = (1u64 << 30) as f64 / c.elapsed().as_secs_f64() / 1e6;
    println!(
        "\nre-replication: {copies} copies ({:.2} GiB) of a dead node re-made in {secs:.1} s \
         (from the kill, including 2 s to declare it dead): {:.0} MB/s; the disk's own copy \
         rate (cp + sync of 1 GiB): {disk:.0} MB/s; ratio {:.2}",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6 / disk
    );
}
