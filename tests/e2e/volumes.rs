//! Clusters whose storage nodes live on btrfs (a loop-mounted image), snapshots through the
//! CLI, and `mobula up --btrfs-image`.

use std::time::Duration;

use mobula::cluster::{Cluster, ClusterConfig};
use mobula_storage_node::volume::loopback;

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

async fn cli(args: &[&str]) -> String {
    let o = tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn a_cluster_on_btrfs_serves_and_snapshots() {
    let Some(fs) = loopback::for_test(2 << 30) else {
        return;
    };
    let mut cfg = ClusterConfig::new(&fs.mountpoint.join("data"), "127.0.0.1:0".parse().unwrap());
    cfg.gateway.reclaim_every = Duration::from_millis(100);
    let c = Cluster::start(cfg).await.unwrap();
    let http = reqwest::Client::new();
    let body = crate::bytes(3 << 20, 21);
    let r = http
        .put(format!("{}/admin/stor/x", c.url()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let node = c.nodes[0].as_ref().unwrap().url.clone();
    let status: serde_json::Value = reqwest::get(format!("{node}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["volume"], "btrfs");
    cli(&[
        "storage-node",
        "snapshot",
        "create",
        "before",
        "--node",
        &node,
    ])
    .await;
    let list = cli(&["storage-node", "snapshot", "list", "--node", &node]).await;
    assert!(list.starts_with("before\t"), "{list}");
    let report = cli(&["storage-node", "scrub", "--node", &node]).await;
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report["bad"].as_array().unwrap().is_empty());
    let got = http
        .get(format!("{}/admin/stor/x", c.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == body);
    cli(&[
        "storage-node",
        "snapshot",
        "delete",
        "before",
        "--node",
        &node,
    ])
    .await;
    assert_eq!(
        cli(&["storage-node", "snapshot", "list", "--node", &node]).await,
        ""
    );

    // A snapshot taken during 16 concurrent PUT streams holds only whole, verifying files.
    let r = http
        .put(format!("{}/admin/stor/anchor", c.url()))
        .header("durability-level", "3")
        .body(vec![1u8; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let puts: Vec<_> = (0..16)
        .map(|i| {
            let (http, url) = (http.clone(), c.url().to_string());
            tokio::spawn(async move {
                let (tx, rx) =
                    futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
                let send = http
                    .put(format!("{url}/admin/stor/stream{i}"))
                    .header("durability-level", "3")
                    .body(reqwest::Body::wrap_stream(rx))
                    .send();
                let feed = async move {
                    use futures::SinkExt;
                    let mut tx = tx;
                    for k in 0..40u8 {
                        tx.send(Ok(vec![k; 64 << 10])).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                let (r, ()) = tokio::join!(send, feed);
                assert_eq!(r.unwrap().status(), 204);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let snap =
        c.gw.node_client
            .snapshot_create(&node, "busy")
            .await
            .unwrap();
    for p in puts {
        p.await.unwrap();
    }
    let mut whole = 0;
    for sub in std::fs::read_dir(snap.path.join("data"))
        .unwrap()
        .filter_map(Result::ok)
    {
        for f in std::fs::read_dir(sub.path())
            .unwrap()
            .filter_map(Result::ok)
        {
            let name = f.file_name().to_string_lossy().to_string();
            if name.ends_with(".blk") {
                continue;
            }
            let data = std::fs::read(f.path()).unwrap();
            let blk = mobula_storage_node::blocks::BlockHashes::stored(&f.path())
                .expect("the data file carries its hashes");
            let mut h = mobula_storage_node::blocks::BlockHasher::new();
            h.update(&data);
            assert_eq!(
                h.finish().0,
                blk,
                "{name} in the snapshot is whole and verifies"
            );
            whole += 1;
        }
    }
    assert!(
        whole >= 1,
        "the snapshot holds the object written before it"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn up_with_a_btrfs_image() {
    if let Some(why) = loopback::unavailable() {
        crate::skip(&why);
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mobula-up")
        .tempdir_in("/var/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let image = dir.path().join("nodes.img");
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "up",
            "--s3-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .arg("--btrfs-image")
        .arg(&image)
        .args(["--btrfs-size", "1G"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(i) = l.find("gateway listening on http://") {
            url = l[i + 21..].trim().to_string();
            break;
        }
    }
    assert!(mobula_storage_node::volume::btrfs::is_btrfs(
        &data.join("nodes")
    ));
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{url}/admin/stor/y"))
        .body("on btrfs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(
        !mobula_storage_node::volume::btrfs::is_btrfs(&data.join("nodes")),
        "unmounted on exit"
    );
}

/// Start `up` on `data` with `extra` flags; returns it, its gateway URL and what it printed
/// about its volume.
async fn up_on(data: &std::path::Path, extra: &[&str]) -> (tokio::process::Child, String, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "up",
            "--s3-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--no-auth",
            "--listen",
            "127.0.0.1:0",
            "--btrfs-size",
            "1G",
        ])
        .args(extra)
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut said) = (String::new(), String::new());
    while let Some(l) = lines.next_line().await.unwrap() {
        if l.contains("storage nodes on") {
            said = l.clone();
        }
        if let Some(i) = l.find("gateway listening on http://") {
            url = l[i + 21..].trim().to_string();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(!url.is_empty(), "up started");
    (child, url, said)
}

async fn interrupt(mut child: tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// As root with btrfs-progs, plain `mobula up` keeps its nodes on a sparse btrfs image in its
/// data directory, says so, reopens it on restart, and unmounts it on exit; `--volume plain`
/// opts out.
#[tokio::test]
async fn up_makes_a_btrfs_image_by_default() {
    if let Some(why) = loopback::unavailable() {
        crate::skip(&why);
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("mobula-up")
        .tempdir_in("/var/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let nodes = data.join("nodes");
    let (child, url, said) = up_on(&data, &[]).await;
    assert!(
        said.contains("btrfs image") && said.contains("new"),
        "{said}"
    );
    assert!(mobula_storage_node::volume::btrfs::is_btrfs(&nodes));
    let img = std::fs::metadata(data.join("nodes.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(img.blocks() * 512 < img.len() / 2, "the image is sparse");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{url}/admin/stor/y"))
        .body("cow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    interrupt(child).await;
    assert!(
        !mobula_storage_node::volume::btrfs::is_btrfs(&nodes),
        "unmounted on exit"
    );
    // Restarted: the same image, reopened, with the object in it.
    let (child, url, said) = up_on(&data, &[]).await;
    assert!(said.contains("reopened"), "{said}");
    let r = http
        .get(format!("{url}/admin/stor/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "cow");
    interrupt(child).await;
    // Opting out.
    let plain = dir.path().join("plain");
    let (child, _, said) = up_on(&plain, &["--volume", "plain"]).await;
    assert!(
        said.contains("plain directory") && said.contains("--volume plain"),
        "{said}"
    );
    assert!(!plain.join("nodes.img").exists());
    interrupt(child).await;
}
