//! Volume benchmark (issue: CoW volumes, integrity, scrub):
//! 1. snapshot creation time with 10,000 vs 100,000 stored objects, btrfs (loop image; root)
//!    and plain backends;
//! 2. scrub throughput beside `b3sum` over the same files, in the same run;
//! 3. GET throughput from a storage node with per-block verification on vs off.
//!
//! `cargo bench --bench volume` (`-- --quick` for a short run).

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mobula_storage_node::api::new_id;
use mobula_storage_node::bench::{self as server, NodeState};
use mobula_storage_node::blocks::BlockHasher;
use mobula_storage_node::volume::loopback;
use mobula_storage_node::Store;

/// Create `n` small data files (with their hash files) directly, then sync.
fn populate(store: &Store, n: usize) {
    let body = vec![7u8; 1024];
    let mut h = BlockHasher::new();
    h.update(&body);
    let blk = h.finish().0.encode();
    for _ in 0..n {
        let id = new_id();
        std::fs::write(store.path(&id), &body).unwrap();
        std::fs::write(store.blk_path(&id), &blk).unwrap();
    }
    nix::unistd::sync();
}

fn snapshot_times(root: &Path, label: &str, counts: &[usize]) {
    for &n in counts {
        let store = Store::open(&root.join(format!("{label}-{n}"))).unwrap();
        populate(&store, n);
        let mut times: Vec<f64> = (0..3)
            .map(|i| {
                let t = Instant::now();
                store.volume().snapshot_create(&format!("s{i}")).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("| {label} | {n} | {:.1} ms |", times[1]);
        for i in 0..3 {
            store.volume().snapshot_delete(&format!("s{i}")).unwrap();
        }
    }
}

fn write_big(store: &Store, files: usize, size: usize) -> Vec<String> {
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    (0..files)
        .map(|_| {
            let id = new_id();
            let mut w = store.writer(&id, false).unwrap();
            for _ in 0..size >> 20 {
                w.write(&chunk).unwrap();
            }
            w.commit(&id).unwrap();
            id
        })
        .collect()
}

async fn get_all(url: &str, ids: &[String]) -> f64 {
    let http = reqwest::Client::new();
    let t = Instant::now();
    let mut total = 0u64;
    for pair in ids.chunks(2) {
        let results = futures::future::join_all(pair.iter().map(|id| {
            let http = http.clone();
            async move {
                let r = http.get(format!("{url}/data/{id}")).send().await.unwrap();
                r.bytes_stream()
                    .try_fold(0u64, |n, b| async move { Ok(n + b.len() as u64) })
                    .await
                    .unwrap()
            }
        }))
        .await;
        total += results.iter().sum::<u64>();
    }
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}

async fn serve(store: Store) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let (bad, _rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(_rx);
    let state = NodeState {
        store,
        id: "bench".into(),
        bad,
        meta: None,
        extension: None,
        peers: mobula_storage_node::NodeClient::new(),
    };
    tokio::spawn(server::run(l, state, std::future::pending()));
    url
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let counts: Vec<usize> = if quick {
        vec![1_000, 10_000]
    } else {
        vec![10_000, 100_000]
    };
    let tmp = tempfile::Builder::new()
        .prefix("mobula-vol-bench")
        .tempdir_in("/var/tmp")
        .unwrap();

    println!("## snapshot creation\n| backend | objects | median of 3 |\n|---|---|---|");
    match loopback::TempBtrfs::new(8 << 30) {
        Ok(fs) => snapshot_times(&fs.mountpoint, "btrfs", &counts),
        Err(why) => println!("| btrfs | – | skipped: {why} |"),
    }
    snapshot_times(tmp.path(), "plain", &counts);

    let (files, size) = if quick { (8, 32 << 20) } else { (32, 32 << 20) };
    let store = Store::open(&tmp.path().join("big")).unwrap();
    let ids = write_big(&store, files, size);
    let gib = (files * size) as f64 / 1e6;

    println!(
        "\n## scrub vs b3sum ({files} files × {} MiB, warm cache, second of two runs)",
        size >> 20
    );
    let (bad, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut scrub_s = 0.0;
    for _ in 0..2 {
        scrub_s = mobula_storage_node::bench::scrub(&store, &bad, None)
            .await
            .unwrap()
            .seconds;
    }
    let paths: Vec<_> = ids.iter().map(|id| store.path(id)).collect();
    let mut b3_s = f64::NAN;
    for _ in 0..2 {
        let t = Instant::now();
        match std::process::Command::new("b3sum")
            .arg("--num-threads")
            .arg("1")
            .args(&paths)
            .output()
        {
            Ok(o) if o.status.success() => b3_s = t.elapsed().as_secs_f64(),
            _ => {
                println!("(b3sum not installed: apt-get install b3sum)");
                break;
            }
        }
    }
    println!("| tool | MB/s |\n|---|---|");
    println!(
        "| mobula scrub (1 thread, per-block verify) | {:.0} |",
        gib / scrub_s
    );
    println!("| b3sum --num-threads 1 | {:.0} |", gib / b3_s);
    println!("| ratio scrub/b3sum | {:.2} |", b3_s / scrub_s);

    println!(
        "\n## node GET, verification on vs off (2 concurrent, warm cache, second of two runs)"
    );
    let verified = serve(store.clone()).await;
    let unverified = serve(store.clone().without_read_verification()).await;
    let (mut on, mut off) = (0.0, 0.0);
    for _ in 0..2 {
        on = get_all(&verified, &ids).await;
        off = get_all(&unverified, &ids).await;
    }
    println!("| mode | MB/s |\n|---|---|");
    println!(
        "| verified | {on:.0} |\n| unverified | {off:.0} |\n| verified/unverified | {:.2} |",
        on / off
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
