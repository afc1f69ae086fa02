//! Garage 2.5 for the S3 benchmark: three nodes on loopback, replication 2, `data_fsync` and
//! `metadata_fsync` on, one key, buckets `bench` and `list` (the latter filled with the same
//! listing keys as Mobula's, by PUTs). Skipped with a note when the binary is not built.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::{Child, Command};

use crate::load::{free_port, Target};
use crate::sigv4::Signer;

fn binary() -> Option<PathBuf> {
    let p = std::env::var("GARAGE_BIN").unwrap_or_else(|_| "/var/tmp/garage/bin/garage".into());
    Path::new(&p).exists().then(|| PathBuf::from(p))
}

async fn cli(bin: &Path, conf: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "garage {args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Start the three nodes; the target (charging all three processes) and the children.
pub async fn start(dir: &Path, keys: usize) -> Option<(Target, Vec<Child>)> {
    let Some(bin) = binary() else {
        println!("(Garage not built: cargo install garage --version 2.5.0 --locked --root /var/tmp/garage)");
        return None;
    };
    let secret = "1f".repeat(32);
    let mut children = Vec::new();
    let mut confs = Vec::new();
    let mut s3_ports = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let (rpc, s3) = (free_port(), free_port());
        let conf = d.join("garage.toml");
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 2\nmetadata_fsync = true\ndata_fsync = true\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"us-east-1\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        children.push(child);
        confs.push(conf);
        s3_ports.push(s3);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut ids = Vec::new();
    for c in &confs {
        let id = cli(&bin, c, &["node", "id", "-q"]).await;
        ids.push(id.trim().to_string());
    }
    for id in &ids[1..] {
        cli(&bin, &confs[0], &["node", "connect", id]).await;
    }
    for id in &ids {
        let short = id.split('@').next().unwrap();
        cli(
            &bin,
            &confs[0],
            &["layout", "assign", "-z", "dc1", "-c", "10G", short],
        )
        .await;
    }
    cli(&bin, &confs[0], &["layout", "apply", "--version", "1"]).await;
    let out = cli(&bin, &confs[0], &["key", "create", "bench"]).await;
    let word = |label: &str| {
        out.lines()
            .find(|l| l.to_ascii_lowercase().contains(label))
            .and_then(|l| l.split_whitespace().last())
            .unwrap()
            .to_string()
    };
    let (ak, sk) = (word("key id"), word("secret key"));
    for b in ["bench", "list"] {
        cli(&bin, &confs[0], &["bucket", "create", b]).await;
        cli(
            &bin,
            &confs[0],
            &[
                "bucket", "allow", "--read", "--write", "--owner", b, "--key", "bench",
            ],
        )
        .await;
    }
    let signer = Signer::new(&format!("127.0.0.1:{}", s3_ports[0]), &ak, &sk);
    // The listing keys, by PUTs (Garage has no side door).
    let http = reqwest::Client::new();
    futures::stream::iter(0..keys)
        .map(|i| {
            let url = signer.presign("PUT", "list", &format!("dir{:02}/key{i:08}", i % 100), &[]);
            let http = http.clone();
            async move {
                let r = http.put(url).body("").send().await.unwrap();
                assert!(r.status().is_success(), "garage PUT {}", r.status());
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let pids = children.iter().filter_map(|c| c.id()).collect();
    let s2 = signer.clone();
    Some((
        Target {
            label: "Garage 2.5",
            url: Box::new(move |m, k| signer.presign(m, "bench", k, &[])),
            list: Some(Box::new(move |p, d, t| s2.list("list", p, d, t))),
            pids,
            durability_header: false,
        },
        children,
    ))
}
