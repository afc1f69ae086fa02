//! End-to-end tests: real clusters (metadata, ≥3 storage nodes, gateway) started in-process on
//! port 0 with temporary directories, driven over real HTTP/TCP; one module runs the roles as
//! separate OS processes of the `mobula` binary.

mod auth;
mod buckets;
mod cli;
mod concurrency;
mod console;
mod crash;
mod crash_meta;
mod failures;
mod gateways;
mod groups;
mod images;
mod integrity;
mod job_watch;
mod jobs;
mod listing;
mod metrics;
mod multipart;
mod netns;
mod netns_jobs;
mod node_manta;
mod nodes;
mod objects;
mod outputs_together;
mod pg_host;
mod processes;
mod s3;
mod s3_fast;
mod s3_signed;
mod sandbox;
mod task_groups;
mod tls;
mod volumes;

use std::time::Duration;

use base64::Engine;
use md5::Digest;
use mobula::cluster::{Cluster, ClusterConfig};
use reqwest::{Method, StatusCode};

/// A test's prerequisite (root, btrfs, a tool) is missing: say why and skip — or fail when
/// MOBULA_REQUIRE_PRIVILEGED=1 (CI), where every prerequisite must be there.
pub fn skip(why: &str) {
    assert!(
        std::env::var("MOBULA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{why}"
    );
    eprintln!("skipped: {why}");
}

/// A running test cluster and a client for it.
pub struct T {
    pub c: Cluster,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl T {
    pub async fn start(nodes: usize) -> T {
        Self::start_with(nodes, |_| {}).await
    }

    pub async fn start_with(nodes: usize, f: impl FnOnce(&mut ClusterConfig)) -> T {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        // `MOBULA_E2E_DIR`: where the cluster's files go instead of the temp dir (.ci/run points
        // it at a journaled ext4, where small PUTs write their copies together).
        let dir = match std::env::var_os("MOBULA_E2E_DIR") {
            Some(base) => {
                let dir = tempfile::tempdir_in(base).unwrap();
                let journaled = mobula_storage_node::volume::plain::journaled_ext4(dir.path());
                assert!(journaled, "MOBULA_E2E_DIR is meant to be a journaled ext4");
                dir
            }
            None => tempfile::tempdir().unwrap(),
        };
        let mut cfg = ClusterConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        cfg.nodes = nodes;
        cfg.gateway.reclaim_every = Duration::from_millis(100);
        // The suite on PostgreSQL (.ci/run runs the metadata-heavy modules a second time so).
        if let Ok(url) = std::env::var("MOBULA_E2E_POSTGRES") {
            cfg.database = Some(mobula_metadata::testing::fresh_postgres(&url));
        }
        f(&mut cfg);
        let c = Cluster::start(cfg).await.unwrap();
        T {
            c,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.c.url())
    }

    pub fn req(&self, m: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(m, self.url(path))
    }

    pub async fn mkdir(&self, path: &str) -> reqwest::Response {
        self.req(Method::PUT, path)
            .header("content-type", "application/json; type=directory")
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.req(Method::PUT, path).body(body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.bytes().await.unwrap().to_vec()
    }

    /// Data files on node `i`, plus any hash file left without its data.
    pub fn node_files(&self, i: usize) -> usize {
        let mut n = 0;
        let data = self.c.node_dir(i).join("volume").join("data");
        let Ok(subs) = std::fs::read_dir(&data) else {
            return 0;
        };
        for sub in subs.filter_map(Result::ok) {
            for f in std::fs::read_dir(sub.path())
                .unwrap()
                .filter_map(Result::ok)
            {
                let name = f.file_name().to_string_lossy().to_string();
                match name.strip_suffix(".blk") {
                    Some(id) => n += usize::from(!sub.path().join(id).exists()),
                    None => n += 1,
                }
            }
        }
        n
    }

    /// Index of the node with id `id`.
    pub fn node_index(&self, id: &str) -> usize {
        (0..self.c.cfg.nodes)
            .find(|i| {
                std::fs::read_to_string(self.c.node_dir(*i).join("node-id"))
                    .unwrap()
                    .trim()
                    == id
            })
            .unwrap()
    }

    /// URL of running node `i`.
    pub fn node_url(&self, i: usize) -> String {
        self.c.nodes[i].as_ref().unwrap().url.clone()
    }

    /// Path of the data file of `data_id` on node `i`.
    pub fn data_path(&self, i: usize, data_id: &str) -> std::path::PathBuf {
        self.c
            .node_dir(i)
            .join("volume")
            .join("data")
            .join(&data_id[..2])
            .join(data_id)
    }

    /// The metadata entry of an object path.
    pub async fn data_of(&self, path: &str) -> mobula_metadata::api::Data {
        self.c
            .gw
            .meta
            .get(path)
            .await
            .unwrap()
            .unwrap()
            .data
            .unwrap()
    }

    /// Data files on every node.
    pub fn data_files(&self) -> usize {
        (0..self.c.cfg.nodes).map(|i| self.node_files(i)).sum()
    }

    /// Wait (up to 10 s) until the nodes hold exactly `n` files.
    pub async fn wait_data_files(&self, n: usize) {
        for _ in 0..200 {
            if self.data_files() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.data_files(), n, "data files on the nodes");
    }
}

pub fn count_named(dir: &std::path::Path, suffix: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                count_named(&e.path(), suffix)
            } else {
                usize::from(e.file_name().to_string_lossy().ends_with(suffix))
            }
        })
        .sum()
}

/// Run `c` with `stdin` written to it: (succeeded, stdout, stderr).
pub async fn run_with_stdin(mut c: tokio::process::Command, stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let o = child.wait_with_output().await.unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (
        o.status.success(),
        out,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Assert an error response's status and code.
pub async fn assert_err(r: reqwest::Response, status: u16, code: &str) {
    assert_eq!(r.status().as_u16(), status, "status for {code}");
    assert!(r.headers().contains_key("x-request-id"));
    let v: serde_json::Value = r.json().await.expect("JSON error body");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
}

pub fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
