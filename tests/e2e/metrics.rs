//! Metrics and health of the real `mobula` processes: after a known load the counters equal
//! what was done, histograms are there, and the names and label keys are the ones recorded in
//! `metrics.names` (a snapshot: dashboards depend on them); readiness follows the roles; one
//! request is followed across separate gateway, node and metadata processes by its id in
//! their JSON logs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// A `mobula` process whose stdout and stderr lines are kept.
pub(crate) struct Proc {
    _child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let keep = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(r).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let out = keep(Box::new(child.stdout.take().unwrap()));
        let err = keep(Box::new(child.stderr.take().unwrap()));
        Proc {
            _child: child,
            out,
            err,
        }
    }

    /// `mobula up --no-auth --volume plain` on `data`, every listener on a port of its own.
    pub(crate) fn up(data: &str) -> Proc {
        Proc::up_with(data, &[])
    }

    /// [`Proc::up`] with `extra` arguments.
    pub(crate) fn up_with(data: &str, extra: &[&str]) -> Proc {
        let any = "127.0.0.1:0";
        let args = [
            "up",
            "--data",
            data,
            "--no-auth",
            "--volume",
            "plain",
            "--listen",
            any,
        ];
        let listeners = ["--s3-listen", any, "--admin-listen", any];
        Proc::start(&[&args[..], &listeners[..], extra].concat(), &[])
    }

    /// The first URL on a stdout line containing `marker` (waits for it).
    pub(crate) async fn url(&self, marker: &str) -> String {
        for _ in 0..600 {
            let found = self.out.lock().unwrap().iter().find_map(|l| {
                let i = l.find(marker)?;
                let rest = &l[i..];
                let u = rest.find("http://")?;
                Some(rest[u..].split_whitespace().next()?.to_string())
            });
            if let Some(u) = found {
                return u
                    .trim_end_matches(',')
                    .trim_end_matches("/metrics")
                    .to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no line with {marker:?}: {:?}", self.out.lock().unwrap());
    }
}

/// One sample of the Prometheus text: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((name.to_string(), labels, value.parse().unwrap()));
    }
    out
}

/// The sum of every sample of `name` whose labels include `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

pub(crate) async fn scrape(http: &reqwest::Client, admin: &str) -> Vec<Sample> {
    let r = http.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&r.text().await.unwrap())
}

async fn ready(http: &reqwest::Client, admin: &str) -> (u16, Value) {
    let r = http
        .get(format!("{admin}/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub(crate) async fn wait_ready(http: &reqwest::Client, admin: &str) {
    for _ in 0..200 {
        if ready(http, admin).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{admin} never ready: {:?}", ready(http, admin).await);
}

/// A job of one map phase running `exec`, given `inputs` and ended; its path.
async fn map_job(http: &reqwest::Client, url: &str, exec: &str, inputs: &[String]) -> String {
    let r = http
        .post(format!("{url}/admin/jobs"))
        .json(&json!({"phases": [{"type": "map", "exec": exec}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .post(format!("{url}{job}/live/in?end=true"))
        .body(inputs.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    job
}

async fn job_status(http: &reqwest::Client, url: &str, job: &str) -> Value {
    let r = http.get(format!("{url}{job}/live/status")).send().await;
    r.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn metrics_count_exactly_what_was_done() {
    if !nix::unistd::geteuid().is_root() {
        return crate::skip("the metrics test runs a job (task sandboxes need root)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("up").to_string_lossy().to_string();
    let up = Proc::up(&data);
    let url = up.url("gateway listening on").await;
    let s3 = up.url("S3 listening on").await;
    let admin = up.url("metrics at").await;
    let http = reqwest::Client::new();
    wait_ready(&http, &admin).await;
    let (_, health) = ready(&http, &admin).await;
    assert_eq!(health["checks"]["gateway"], "ok", "{health}");
    assert_eq!(health["checks"]["node 2"], "ok", "{health}");
    let live = http
        .get(format!("{admin}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let nowhere = http.get(format!("{admin}/nope")).send().await.unwrap();
    assert_eq!(nowhere.status(), 404);

    // The load: 1 directory, 100 PUTs of 4 KiB, 10 GETs, 1 GET of nothing, 1 unsigned S3 call.
    let r = http
        .put(format!("{url}/admin/stor/m"))
        .header("content-type", "application/json; type=directory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let puts = (0..100).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .put(format!("{url}/admin/stor/m/o{i}"))
                .body(vec![i as u8; 4096])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    });
    futures::future::join_all(puts).await;
    for i in 0..10 {
        let r = http
            .get(format!("{url}/admin/stor/m/o{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 4096);
    }
    let r = http
        .get(format!("{url}/admin/stor/m/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{s3}/")).send().await.unwrap();
    assert_eq!(r.status(), 403);

    let m = scrape(&http, &admin).await;
    let req = |api: &str, op: &str, status: &str| {
        sum(
            &m,
            "mobula_requests_total",
            &[("api", api), ("op", op), ("status", status)],
        )
    };
    assert_eq!(req("manta", "PutObject", "204"), 100.0);
    assert_eq!(req("manta", "PutDirectory", "204"), 1.0);
    assert_eq!(req("manta", "GetObject", "200"), 10.0);
    assert_eq!(req("manta", "GetObject", "404"), 1.0);
    assert_eq!(req("s3", "ListBuckets", "403"), 1.0);
    // Every object's metadata row written once, through the in-process metadata calls.
    assert_eq!(req("metadata", "entry.put_object", "200"), 100.0);
    let count = |op: &str| {
        sum(
            &m,
            "mobula_request_duration_seconds_count",
            &[("api", "manta"), ("op", op)],
        )
    };
    assert_eq!(count("PutObject"), 100.0);
    let inf = sum(
        &m,
        "mobula_request_duration_seconds_bucket",
        &[("api", "manta"), ("op", "PutObject"), ("le", "+Inf")],
    );
    assert_eq!(inf, 100.0);
    // Two copies of each object, on the three nodes; every one still held.
    assert_eq!(sum(&m, "mobula_copies_written_total", &[]), 200.0);
    assert_eq!(sum(&m, "mobula_node_copies", &[]), 200.0);
    assert_eq!(sum(&m, "mobula_copies_bad_total", &[]), 0.0);
    assert!(sum(&m, "mobula_bytes_received_total", &[("api", "manta")]) > 100.0 * 4096.0);
    assert!(sum(&m, "mobula_bytes_sent_total", &[("api", "manta")]) > 10.0 * 4096.0);
    assert!(sum(&m, "mobula_metadata_transaction_seconds_count", &[]) >= 1.0);
    assert!(sum(&m, "mobula_node_free_bytes", &[]) > 0.0);
    assert!(sum(&m, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sum(&m, "process_open_fds", &[]) > 3.0);

    // A job of 5 map tasks: finished tasks counted on their nodes, containers timed.
    let inputs: Vec<String> = (0..5).map(|i| format!("/admin/stor/m/o{i}")).collect();
    let job = map_job(&http, &url, "wc -c", &inputs).await;
    for _ in 0..600 {
        if job_status(&http, &url, &job).await["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Scrub every node: each copy verified once.
    let nodes: Value = http
        .post(format!("{}/rpc/node.list", metadata_url(&up).await))
        .json(&json!(null))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for n in nodes.as_array().unwrap() {
        let r = http
            .post(format!("{}/scrub", n["url"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = scrape(&http, &admin).await;
    let finished = sum(&m, "mobula_tasks_finished_total", &[("result", "done")]);
    assert_eq!(finished, 5.0);
    assert_eq!(
        sum(&m, "mobula_tasks_finished_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(sum(&m, "mobula_tasks_running", &[]), 0.0);
    assert_eq!(sum(&m, "mobula_tasks_queued", &[]), 0.0);
    assert!(sum(&m, "mobula_sandbox_setup_seconds_count", &[]) >= 5.0);
    // 200 copies of the objects, 2 of each of the 5 outputs, and the job's archive; none gone.
    let written = sum(&m, "mobula_copies_written_total", &[]);
    let copies: Vec<&Sample> = m
        .iter()
        .filter(|(n, _, _)| n.starts_with("mobula_copies_written") || n == "mobula_node_copies")
        .collect();
    assert!(written >= 210.0, "{copies:?}");
    assert_eq!(written, sum(&m, "mobula_node_copies", &[]), "{copies:?}");
    let verified = sum(&m, "mobula_copies_verified_total", &[]);
    assert_eq!(verified, sum(&m, "mobula_node_copies", &[]));
    assert!(verified >= 210.0, "{verified}");
    assert_eq!(sum(&m, "mobula_scrub_passes_total", &[]), 3.0);
    assert!(sum(&m, "mobula_scrub_last_pass_timestamp_seconds", &[]) > 1.7e9 * 3.0);

    // `mobula status` with only what `up` printed: every node up, its copies and scrub shown.
    let screen = status_screen(&[
        ("MOBULA_URL", url.as_str()),
        ("MOBULA_METADATA_URL", &metadata_url(&up).await),
        ("MOBULA_ADMIN_URL", &admin),
    ])
    .await;
    assert!(
        screen.contains("nodes: 3 registered, 3 healthy"),
        "{screen}"
    );
    assert!(screen.contains(" 0 under-replicated,"), "{screen}");
    assert!(screen.contains("jobs: 0 running"), "{screen}");
    for n in nodes.as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        let line = screen.lines().find(|l| l.contains(id)).expect(id);
        let held = sum(&m, "mobula_node_copies", &[("node", id)]);
        assert!(line.contains(&format!(" {held:.0} ")), "{line}");
        assert!(line.contains(" s ago") && line.ends_with(" up"), "{line}");
    }

    // The names and label keys are the recorded ones.
    let names: BTreeSet<String> = m
        .iter()
        .map(|(n, l, _)| {
            let keys: Vec<&str> = l.keys().map(String::as_str).collect();
            format!("{n} {}", keys.join(",")).trim_end().to_string()
        })
        .collect();
    let want: BTreeSet<String> = include_str!("metrics.names")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let got: Vec<&String> = names.iter().collect();
    assert!(
        want.iter().all(|w| names.contains(w)) && names.iter().all(|n| want.contains(n)),
        "metric names and label keys changed; now:\n{}",
        got.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What `mobula status` prints with `env`.
async fn status_screen(env: &[(&str, &str)]) -> String {
    let o = Command::new(BIN)
        .arg("status")
        .env_remove("MOBULA_METADATA_URL")
        .env_remove("MOBULA_ADMIN_URL")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The metadata URL `up` printed (`MOBULA_METADATA_URL=…`).
async fn metadata_url(up: &Proc) -> String {
    let line = up.url("MOBULA_METADATA_URL=").await;
    line.trim_start_matches("MOBULA_METADATA_URL=").to_string()
}

#[tokio::test]
async fn health_follows_the_roles_and_request_ids_follow_a_request_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let json_logs = [
        ("MOBULA_LOG_FORMAT", "json"),
        (
            "RUST_LOG",
            "warn,mobula_gateway=debug,mobula_metadata=debug,mobula_storage_node=debug",
        ),
    ];
    let meta = Proc::start(
        &[
            "metadata",
            "--data",
            &d("meta"),
            "--listen",
            "127.0.0.1:0",
            "--create-account",
            "admin",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &json_logs,
    );
    let murl = meta.url("listening on").await;
    let madmin = meta.url("metrics at").await;
    let http = reqwest::Client::new();
    wait_ready(&http, &madmin).await;
    let gw = Proc::start(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
            &murl,
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &json_logs,
    );
    let gurl = gw.url("gateway listening on").await;
    let gadmin = gw.url("metrics at").await;
    // No storage node yet: the gateway is live but not ready, and says why.
    let live = http
        .get(format!("{gadmin}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let (status, body) = ready(&http, &gadmin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["checks"]["gateway"], "no healthy storage node",
        "{body}"
    );
    let mut nodes = Vec::new();
    for i in 0..2 {
        let n = Proc::start(
            &[
                "storage-node",
                "--data",
                &d(&format!("n{i}")),
                "--metadata",
                &murl,
                "--no-jobs",
                "--admin-listen",
                "127.0.0.1:0",
            ],
            &json_logs,
        );
        let nadmin = n.url("metrics at").await;
        wait_ready(&http, &nadmin).await;
        nodes.push(n);
    }
    wait_ready(&http, &gadmin).await;

    // One PUT: its id is in the answer, and in a log line of the gateway, of both nodes that
    // took a copy, and of the metadata service that recorded it.
    let mut put = None;
    for _ in 0..100 {
        let r = http
            .put(format!("{gurl}/admin/stor/followed"))
            .body("x".repeat(1000))
            .send()
            .await
            .unwrap();
        if r.status() == 204 {
            put = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let put = put.expect("the PUT succeeded");
    let id = put.headers()["x-request-id"].to_str().unwrap().to_string();
    let logged = |p: &Proc| -> Vec<Value> {
        p.err
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["span"]["id"] == id.as_str()
                    || v["spans"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["id"] == id.as_str()))
            })
            .collect()
    };
    let mut seen = (false, false, 0);
    for _ in 0..100 {
        seen = (
            !logged(&gw).is_empty(),
            !logged(&meta).is_empty(),
            nodes.iter().filter(|n| !logged(n).is_empty()).count(),
        );
        if seen == (true, true, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        (true, true, 2),
        "request {id}: (gateway, metadata, nodes) logged it; gateway's log: {:?}",
        gw.err.lock().unwrap()
    );
    let line = &logged(&meta)[0];
    assert!(
        line["timestamp"].is_string() && line["level"].is_string(),
        "{line}"
    );

    // A node dies: `mobula status` shows it at once, and its copies as under-replicated once
    // it has been silent for the registry's staleness limit.
    let env = [
        ("MOBULA_URL", gurl.as_str()),
        ("MOBULA_METADATA_URL", murl.as_str()),
    ];
    let before = status_screen(&env).await;
    assert!(
        before.contains("nodes: 2 registered, 2 healthy"),
        "{before}"
    );
    assert!(before.contains(" 0 under-replicated,"), "{before}");
    drop(nodes.pop());
    let mut screen = String::new();
    for _ in 0..100 {
        screen = status_screen(&env).await;
        if screen.contains(" 1 under-replicated,") && screen.contains("2 registered, 1 healthy") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(screen.contains(" 1 under-replicated,"), "{screen}");
    assert!(screen.contains("2 registered, 1 healthy"), "{screen}");
    assert!(screen.contains("silent"), "{screen}");
    // Without a metadata service there is nothing to show: a clear error.
    drop(meta);
    let o = Command::new(BIN)
        .arg("status")
        .env("MOBULA_METADATA_URL", &murl)
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not answer"), "{err}");
}

/// Map tasks handed to a node beyond its slots wait there, their inputs bound: counted in
/// `mobula_tasks_waiting` (neither queued at the coordinator nor running), never more running
/// than the slots, and every gauge back at 0 when the job is done.
#[tokio::test]
async fn tasks_waiting_at_a_node_for_a_slot_are_counted() {
    if !nix::unistd::geteuid().is_root() {
        return crate::skip("the waiting-tasks test runs a job (task sandboxes need root)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("up").to_string_lossy().to_string();
    let up = Proc::up_with(&data, &["--slots", "1"]);
    let url = up.url("gateway listening on").await;
    let admin = up.url("metrics at").await;
    let http = reqwest::Client::new();
    wait_ready(&http, &admin).await;
    let r = http
        .put(format!("{url}/admin/stor/w"))
        .header("content-type", "application/json; type=directory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let inputs: Vec<String> = (0..6).map(|i| format!("/admin/stor/w/o{i}")).collect();
    for p in &inputs {
        let r = http
            .put(format!("{url}{p}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let m = scrape(&http, &admin).await;
    assert_eq!(sum(&m, "mobula_tasks_waiting", &[]), 0.0, "before any job");
    let job = map_job(&http, &url, "sleep 1", &inputs).await;
    // Three nodes of one slot each, six tasks: while the first three run, the rest wait.
    let mut seen_waiting = 0.0f64;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&http, &admin).await;
        let (running, waiting) = (
            sum(&m, "mobula_tasks_running", &[]),
            sum(&m, "mobula_tasks_waiting", &[]),
        );
        assert!(running <= 3.0, "{running} tasks ran on three slots");
        assert!(
            running + waiting <= 6.0,
            "{running} running, {waiting} waiting"
        );
        seen_waiting = seen_waiting.max(waiting);
        let s = job_status(&http, &url, &job).await;
        if s["state"] == "done" {
            assert_eq!(s["stats"]["errors"], 0, "{s}");
            break;
        }
        assert!(std::time::Instant::now() < end, "job not done: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen_waiting >= 1.0,
        "no task was ever seen waiting for a slot"
    );
    let m = scrape(&http, &admin).await;
    assert_eq!(sum(&m, "mobula_tasks_waiting", &[]), 0.0);
    assert_eq!(sum(&m, "mobula_tasks_running", &[]), 0.0);
    assert_eq!(sum(&m, "mobula_tasks_queued", &[]), 0.0);
}
