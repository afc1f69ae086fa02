//! Crash safety: storage-node processes are aborted (no cleanup, as a SIGKILL) at chosen crash
//! points during PUTs, deletes, snapshots and repair; after a restart no partial file is
//! visible, no acknowledged object is missing, and nothing is leaked. Needs the `failpoints`
//! feature (`cargo test --workspace --all-features`, the README's test command).
#![cfg(feature = "failpoints")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mobula::cluster::{self, Running};
use mobula_gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

struct Harness {
    _meta: Running,
    _gw: Running,
    gw: Arc<Gateway>,
    url: String,
    murl: String,
    dirs: Vec<PathBuf>,
    nodes: Vec<Option<(Child, String)>>,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

/// A `mobula` role process (`args`, then `--data dir`) armed with `crash_at`; returns once it
/// printed the URL it serves (its first line), with that URL.
pub(crate) async fn spawn_armed(args: &[&str], dir: &Path, crash_at: &str) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(dir)
        .env("MOBULA_CRASH_AT", crash_at)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let l = lines.next_line().await.unwrap().unwrap();
    let url = l[l.find("http://").unwrap()..].trim().to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

pub(crate) async fn spawn_node(dir: &Path, murl: &str, crash_at: &str) -> (Child, String) {
    let args = ["storage-node", "--scrub-every", "0", "--metadata", murl];
    spawn_armed(&args, dir, crash_at).await
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_in(None).await
    }

    /// A harness whose nodes live under `nodes` (e.g. a btrfs mount) instead of the temp dir.
    async fn start_in(nodes: Option<&Path>) -> Harness {
        let tmp = tempfile::tempdir().unwrap();
        let (ml, murl) = cluster::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let db = format!("sqlite:{}", tmp.path().join("meta.db").display());
        let meta = cluster::start_metadata(ml, murl.clone(), &db).unwrap();
        mobula_metadata::MetadataClient::new(&murl)
            .create_account("admin")
            .await
            .unwrap();
        let mut cfg = GatewayConfig::new(&murl);
        cfg.reclaim_every = Duration::from_millis(100);
        let gw = Gateway::new(cfg);
        let (gl, url) = cluster::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let gwr = cluster::start_gateway(gl, url.clone(), gw.clone());
        let base = nodes.unwrap_or(tmp.path());
        let dirs: Vec<PathBuf> = (0..2).map(|i| base.join(format!("n{i}"))).collect();
        let mut h = Harness {
            _meta: meta,
            _gw: gwr,
            gw,
            url,
            murl,
            dirs,
            nodes: vec![None, None],
            http: reqwest::Client::new(),
            _tmp: tmp,
        };
        h.restart("").await;
        h
    }

    /// (Re)start both nodes, armed with `crash_at`, and wait until the gateway sees them.
    async fn restart(&mut self, crash_at: &str) {
        for i in 0..2 {
            if let Some((mut c, _)) = self.nodes[i].take() {
                let _ = c.kill().await;
            }
            self.nodes[i] = Some(spawn_node(&self.dirs[i], &self.murl, crash_at).await);
        }
        for _ in 0..200 {
            let reg = self.gw.meta.nodes().await.unwrap();
            let ok = self
                .nodes
                .iter()
                .flatten()
                .all(|(_, u)| reg.iter().any(|r| &r.url == u && r.last_seen_ago_ms < 2000));
            if ok {
                self.gw.nodes.refresh().await.unwrap();
                // Forget failures seen before the restart.
                for r in &reg {
                    while self.gw.nodes.recently_failed(&r.id) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        self.gw.nodes.refresh().await.unwrap();
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nodes did not register");
    }

    /// Wait until both armed node processes have aborted.
    async fn wait_crashed(&mut self) {
        for (c, _) in self.nodes.iter_mut().flatten() {
            let status = tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .expect("node crashed")
                .unwrap();
            assert!(!status.success(), "aborted at the crash point");
        }
    }

    fn node_url(&self, i: usize) -> String {
        self.nodes[i].as_ref().unwrap().1.clone()
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> u16 {
        match self
            .http
            .put(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Every acknowledged object reads back exactly; every copy verifies; no leftovers.
    async fn check(&self, acked: &[(String, Vec<u8>)]) {
        for (path, body) in acked {
            let r = self
                .http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path} after the crash");
            assert!(r.bytes().await.unwrap() == *body, "{path} intact");
        }
        for i in 0..2 {
            let report = self.gw.node_client.scrub(&self.node_url(i)).await.unwrap();
            assert!(
                report.bad.is_empty(),
                "no partial or corrupt file visible: {:?}",
                report.bad
            );
        }
        // Copies of failed writes are reclaimed: exactly two files per acknowledged object.
        let want = acked.len() * 2;
        let mut files = 0;
        for _ in 0..200 {
            files = self.dirs.iter().map(|d| data_files(d)).sum::<usize>();
            if files == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(files, want, "data files on the nodes");
    }
}

/// Data files of a node (hash files without their data count as leftovers).
fn data_files(node: &Path) -> usize {
    let mut n = 0;
    for sub in std::fs::read_dir(node.join("volume/data"))
        .unwrap()
        .filter_map(Result::ok)
    {
        for f in std::fs::read_dir(sub.path())
            .unwrap()
            .filter_map(Result::ok)
        {
            let name = f.file_name().to_string_lossy().to_string();
            n += match name.strip_suffix(".blk") {
                Some(id) => usize::from(!sub.path().join(id).exists()),
                None => 1,
            };
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_puts_lose_nothing_acknowledged() {
    let points = [
        "put-before-fsync",
        "put-between-links",
        "put-before-dir-fsync",
        "put-before-ack",
    ];
    puts_crash_at(None, &points).await;
}

/// The same on btrfs, where a copy is linked first and made durable by its one fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_puts_on_btrfs_lose_nothing_acknowledged() {
    let Some(fs) = mobula_storage_node::volume::loopback::for_test(1 << 30) else {
        return;
    };
    for i in 0..3 {
        let dir = fs.mountpoint.join(format!("run{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(mobula_storage_node::volume::btrfs::is_btrfs(&dir));
    }
    // (A copy of this size has no sidecar, so there is no second link to crash between;
    // "put-before-fsync" is now after the link.)
    let points = ["put-before-fsync", "put-before-dir-fsync", "put-before-ack"];
    puts_crash_at(Some(&fs.mountpoint), &points).await;
}

/// A node crash at each of `points` during a PUT, nodes under `nodes` (default: the temp dir).
async fn puts_crash_at(nodes: Option<&Path>, points: &[&str]) {
    for (run, &point) in points.iter().enumerate() {
        let base = nodes.map(|n| n.join(format!("run{run}")));
        let mut h = Harness::start_in(base.as_deref()).await;
        let mut acked = Vec::new();
        for i in 0..3 {
            let body = crate::bytes(1_500_000 + i, i as u64);
            let path = format!("/admin/stor/o{i}");
            assert_eq!(h.put(&path, body.clone()).await, 204);
            acked.push((path, body));
        }
        h.restart(point).await;
        let status = h
            .put("/admin/stor/crash", crate::bytes(2_000_000, 99))
            .await;
        assert_ne!(
            status, 204,
            "{point}: a PUT whose nodes died is not acknowledged"
        );
        h.wait_crashed().await;
        h.restart("").await;
        let r = h
            .http
            .get(format!("{}/admin/stor/crash", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{point}: nothing half-stored is visible");
        h.check(&acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_during_deletes_snapshots_and_repair() {
    let mut h = Harness::start().await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let body = crate::bytes(1_200_000 + i, 50 + i as u64);
        let path = format!("/admin/stor/d{i}");
        assert_eq!(h.put(&path, body.clone()).await, 204);
        acked.push((path, body));
    }
    // Delete: the node dies between unlinking the data and its hashes; reclaim finishes later.
    h.restart("delete-between-unlinks").await;
    let r = h
        .http
        .delete(format!("{}/admin/stor/d0", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    h.wait_crashed().await;
    h.restart("").await;
    acked.remove(0);
    h.check(&acked).await;

    // Snapshot: the node dies mid-snapshot; no half snapshot is listed afterwards.
    h.restart("snapshot-before-rename").await;
    assert!(h
        .gw
        .node_client
        .snapshot_create(&h.node_url(0), "s")
        .await
        .is_err());
    h.nodes[1].take().unwrap().0.kill().await.unwrap();
    h.restart("").await;
    assert!(h
        .gw
        .node_client
        .snapshots(&h.node_url(0))
        .await
        .unwrap()
        .is_empty());
    h.gw.node_client
        .snapshot_create(&h.node_url(0), "s")
        .await
        .unwrap();
    h.check(&acked).await;

    // Repair: the re-copy dies before it is committed; after a restart it completes.
    let d =
        h.gw.meta
            .get("/admin/stor/d1")
            .await
            .unwrap()
            .unwrap()
            .data
            .unwrap();
    h.restart("repair-before-commit").await;
    let victim = (0..2)
        .find(|i| {
            std::fs::read_to_string(h.dirs[*i].join("node-id"))
                .unwrap()
                .trim()
                == d.nodes[0]
        })
        .unwrap();
    let file = h.dirs[victim]
        .join("volume/data")
        .join(&d.id[..2])
        .join(&d.id);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let report = h.gw.node_client.scrub(&h.node_url(victim)).await.unwrap();
    assert_eq!(report.bad, vec![d.id.clone()]);
    let crashed = &mut h.nodes[victim].as_mut().unwrap().0;
    tokio::time::timeout(Duration::from_secs(20), crashed.wait())
        .await
        .expect("repair crashed the node")
        .unwrap();
    h.restart("").await;
    for _ in 0..200 {
        let now =
            h.gw.meta
                .get("/admin/stor/d1")
                .await
                .unwrap()
                .unwrap()
                .data
                .unwrap();
        if now.nodes.len() == 2 && h.gw.meta.repairs(10).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.check(&acked).await;
}
