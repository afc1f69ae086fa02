//! Jobs end to end (SPEC §4): real cluster, real agents, real sandboxes. Each test drives the
//! jobs API over HTTP and checks the job's outputs against what it computes itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mobula::cluster::{AgentOptions, ClusterConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{assert_err, skip, T};

/// A cluster whose nodes run job agents; `None` (skipped) without root.
pub async fn cluster(nodes: usize) -> Option<T> {
    cluster_with(nodes, |_| {}).await
}

pub async fn cluster_with(nodes: usize, f: impl FnOnce(&mut ClusterConfig)) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        skip("jobs need root (task sandboxes)");
        return None;
    }
    Some(
        T::start_with(nodes, |c| {
            c.agent = Some(AgentOptions {
                exe: PathBuf::from(env!("CARGO_BIN_EXE_mobula")),
                slots: Some(2),
            });
            f(c)
        })
        .await,
    )
}

/// Create a job; its path.
pub async fn create(t: &T, spec: Value) -> String {
    let r = t
        .req(Method::POST, "/admin/jobs")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    r.headers()["location"].to_str().unwrap().to_string()
}

pub async fn add(t: &T, job: &str, paths: &[String], end: bool) {
    let q = if end { "?end=true" } else { "" };
    let r = t
        .req(Method::POST, &format!("{job}/live/in{q}"))
        .body(paths.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

pub async fn status(t: &T, job: &str) -> Value {
    t.get(&format!("{job}/live/status"))
        .await
        .json()
        .await
        .unwrap()
}

/// Wait for the job to be done (at most `secs`).
pub async fn wait(t: &T, job: &str, secs: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(t, job).await;
        if s["state"] == "done" {
            return s;
        }
        assert!(Instant::now() < end, "job not done in {secs} s: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn lines(t: &T, path: &str) -> Vec<String> {
    let b = t.get_bytes(path).await;
    String::from_utf8(b)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub async fn errors(t: &T, job: &str) -> Vec<Value> {
    lines(t, &format!("{job}/live/err"))
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The contents of every output, in output order.
pub async fn outputs(t: &T, job: &str) -> Vec<String> {
    let mut out = Vec::new();
    for o in lines(t, &format!("{job}/live/out")).await {
        out.push(String::from_utf8(t.get_bytes(&o).await).unwrap());
    }
    out
}

/// Store `n` text objects under `/admin/stor/<dir>/`; their paths and contents.
pub async fn texts(t: &T, dir: &str, n: usize, words: usize) -> Vec<(String, String)> {
    t.mkdir(&format!("/admin/stor/{dir}")).await;
    let vocab = ["alpha", "beta", "gamma", "delta", "needle", "omega", "pi"];
    let mut out = Vec::new();
    for i in 0..n {
        let body: String = (0..words)
            .map(|w| vocab[(i * 7 + w * 3 + w * w) % vocab.len()])
            .collect::<Vec<_>>()
            .chunks(5)
            .map(|l| l.join(" ") + "\n")
            .collect();
        let p = format!("/admin/stor/{dir}/f{i:04}.txt");
        assert_eq!(
            t.put(&p, body.clone()).await.status(),
            StatusCode::NO_CONTENT
        );
        out.push((p, body));
    }
    out
}

pub fn paths(objs: &[(String, String)]) -> Vec<String> {
    objs.iter().map(|(p, _)| p.clone()).collect()
}

/// Wait until the job has started running tasks.
pub async fn wait_running(t: &T, job: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while status(t, job).await["state"] != "running" {
        assert!(Instant::now() < end, "job did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job's outputs are its inputs upper-cased, each exactly once.
pub async fn assert_uppercased(t: &T, job: &str, objs: &[(String, String)]) {
    let mut got = outputs(t, job).await;
    let mut want: Vec<String> = objs.iter().map(|(_, b)| b.to_uppercase()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every input's output exactly once");
}

/// Every line of every node's task log.
pub fn task_log(t: &T) -> Vec<Value> {
    (0..t.c.cfg.nodes)
        .flat_map(|i| {
            std::fs::read_to_string(t.c.node_dir(i).join("agent").join("tasks.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_runs_beside_the_data_and_is_archived() {
    let Some(t) = cluster(3).await else { return };
    let objs = texts(&t, "wc", 12, 40).await;
    let expected: usize = objs.iter().map(|(_, b)| b.split_whitespace().count()).sum();
    let job = create(
        &t,
        json!({"name": "wc", "phases": [
            {"type": "map", "exec": "wc -w"},
            {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}
        ]}),
    )
    .await;
    add(&t, &job, &paths(&objs), true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(outputs(&t, &job).await, vec![format!("{expected}\n")]);
    assert_eq!(s["stats"]["tasks"], 13);
    assert_eq!(s["stats"]["errors"], 0);
    assert_eq!(s["inputDone"], true);
    assert_eq!(s["cancelled"], false);
    assert_eq!(lines(&t, &format!("{job}/live/in")).await, paths(&objs));
    // Map tasks ran on a node holding their input, reading its own copy.
    let log = task_log(&t);
    let maps: Vec<&Value> = log.iter().filter(|l| l["input"].is_string()).collect();
    assert_eq!(maps.len(), 12);
    for m in maps {
        assert_eq!(m["local"], true, "{m}");
        let d = t.data_of(m["input"].as_str().unwrap()).await;
        assert!(
            d.nodes.iter().any(|n| n == m["node"].as_str().unwrap()),
            "{m}"
        );
    }
    // The output has two durable copies.
    let out = lines(&t, &format!("{job}/live/out")).await;
    assert_eq!(t.data_of(&out[0]).await.nodes.len(), 2);
    // The archived record.
    let j: Value = serde_json::from_slice(&t.get_bytes(&format!("{job}/job.json")).await).unwrap();
    assert_eq!(j["state"], "done");
    assert_eq!(lines(&t, &format!("{job}/out.txt")).await, out);
    assert_eq!(lines(&t, &format!("{job}/in.txt")).await, paths(&objs));
    assert!(lines(&t, &format!("{job}/err.txt")).await.is_empty());
    // The account's job list shows it.
    let list = String::from_utf8(t.get_bytes("/admin/jobs").await).unwrap();
    assert!(list.contains(job.rsplit('/').next().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grep_and_map_map_reduce() {
    let Some(t) = cluster(3).await else { return };
    let objs = texts(&t, "g", 6, 23).await;
    let grep = create(&t, json!({"phases": [{"exec": "grep needle || true"}]})).await;
    add(&t, &grep, &paths(&objs), true).await;
    let chain = create(
        &t,
        json!({"phases": [
            {"exec": "tr a-z A-Z"},
            {"exec": "grep -o NEEDLE | wc -l"},
            {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}
        ]}),
    )
    .await;
    add(&t, &chain, &paths(&objs), true).await;
    wait(&t, &grep, 60).await;
    let mut got: Vec<String> = outputs(&t, &grep)
        .await
        .iter()
        .flat_map(|o| o.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut want: Vec<String> = objs
        .iter()
        .flat_map(|(_, b)| {
            b.lines()
                .filter(|l| l.contains("needle"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    let s = wait(&t, &chain, 60).await;
    let needles: usize = objs.iter().map(|(_, b)| b.matches("needle").count()).sum();
    assert_eq!(outputs(&t, &chain).await, vec![format!("{needles}\n")]);
    assert_eq!(s["stats"]["tasks"], 6 + 6 + 1);
}

/// A reducer is fed every map output whole and once, small ones (read or fetched whole) and
/// ones over a MiB (streamed from a file) alike, from this node's copies and from peers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_is_fed_small_and_large_outputs_whole() {
    let Some(t) = cluster(3).await else { return };
    let objs = texts(&t, "feed", 6, 31).await;
    let job = create(
        &t,
        json!({"phases": [
            {"exec": "cat; case \"$MANTA_INPUT_OBJECT\" in *[024].txt) head -c 1200000 /dev/zero | tr '\\0' Z; echo;; esac"},
            {"type": "reduce", "exec": "sort"}
        ]}),
    )
    .await;
    add(&t, &job, &paths(&objs), true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["tasks"], 6 + 1);
    let mut want: Vec<String> = objs
        .iter()
        .flat_map(|(_, b)| b.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    want.extend(std::iter::repeat_n("Z".repeat(1_200_000), 3));
    want.sort();
    let got = outputs(&t, &job).await;
    assert_eq!(got.len(), 1);
    assert!(
        got[0].lines().eq(want.iter().map(String::as_str)),
        "the reducer saw every byte once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msplit_feeds_two_reducers_and_mcat_mpipe_emit() {
    let Some(t) = cluster(3).await else { return };
    let objs = texts(&t, "s", 5, 30).await;
    let job = create(
        &t,
        json!({"phases": [
            {"exec": "tr ' ' '\\n' | grep . | msplit -n 2"},
            {"type": "reduce", "count": 2, "exec": "sort | uniq -c | awk '{print $2, $1}'"}
        ]}),
    )
    .await;
    add(&t, &job, &paths(&objs), true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    let outs = outputs(&t, &job).await;
    assert_eq!(outs.len(), 2, "one output per reducer");
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for (_, b) in &objs {
        for w in b.split_whitespace() {
            *want.entry(w.to_string()).or_default() += 1;
        }
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outs {
        for l in o.lines() {
            let (w, n) = l.split_once(' ').unwrap();
            assert!(
                got.insert(w.to_string(), n.parse().unwrap()).is_none(),
                "{w} went to both reducers"
            );
        }
    }
    assert_eq!(got, want);
    // mcat: outputs by reference (the same objects, no bytes copied); mpipe: named outputs.
    let before = t.data_files();
    let job = create(
        &t,
        json!({"phases": [{"exec": "mcat $MANTA_INPUT_OBJECT && wc -c | mpipe -p ~~/stor/named/$(basename $MANTA_INPUT_OBJECT).n"}]}),
    )
    .await;
    add(&t, &job, &paths(&objs[..2]), true).await;
    wait(&t, &job, 60).await;
    let mut out = lines(&t, &format!("{job}/live/out")).await;
    out.sort();
    let mut want = paths(&objs[..2]);
    want.extend([
        "/admin/stor/named/f0000.txt.n".to_string(),
        "/admin/stor/named/f0001.txt.n".to_string(),
    ]);
    want.sort();
    assert_eq!(out, want);
    // New data: the two named outputs and the five archived records, two copies each; the
    // mcat outputs are the inputs themselves.
    assert_eq!(t.data_files(), before + 2 * 2 + 5 * 2);
    assert_eq!(
        String::from_utf8(t.get_bytes("/admin/stor/named/f0000.txt.n").await).unwrap(),
        format!("{}\n", objs[0].1.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_error_records() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "f", 2, 5).await;
    let job = create(
        &t,
        json!({"phases": [{"exec": "echo boom-$(basename $MANTA_INPUT_OBJECT) >&2; exit 7"}]}),
    )
    .await;
    let mut inputs = paths(&objs);
    inputs.push("/admin/stor/f/missing".into());
    inputs.push("/other/stor/secret".into());
    inputs.push("/admin/stor/f".into());
    add(&t, &job, &inputs, true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 5);
    assert_eq!(s["stats"]["retries"], 0, "user failures are not retried");
    let errs = errors(&t, &job).await;
    for (p, _) in &objs {
        let e = errs.iter().find(|e| e["input"] == p.as_str()).unwrap();
        assert_eq!(e["code"], "UserTaskError");
        assert!(e["message"].as_str().unwrap().contains('7'));
        let stderr = String::from_utf8(t.get_bytes(e["stderr"].as_str().unwrap()).await).unwrap();
        assert_eq!(stderr, format!("boom-{}\n", p.rsplit('/').next().unwrap()));
    }
    for p in ["/admin/stor/f/missing", "/other/stor/secret"] {
        let e = errs.iter().find(|e| e["input"] == p).unwrap();
        assert_eq!(e["code"], "ResourceNotFoundError");
        assert!(
            e["message"].as_str().unwrap().contains("does not exist"),
            "{e}"
        );
    }
    // A directory given as an input is named as one.
    let e = errs.iter().find(|e| e["input"] == "/admin/stor/f").unwrap();
    assert_eq!(e["code"], "ResourceNotFoundError");
    assert_eq!(e["message"], "/admin/stor/f is a directory, not an object");
    let mut fail = lines(&t, &format!("{job}/live/fail")).await;
    fail.sort();
    inputs.sort();
    assert_eq!(fail, inputs);
    // A task killed by a limit, a bad init, a missing image.
    let job = create(
        &t,
        json!({"phases": [{"exec": "python3 -c 'x = bytearray(300 << 20)'", "memory": 64}]}),
    )
    .await;
    add(&t, &job, &paths(&objs[..1]), true).await;
    wait(&t, &job, 60).await;
    assert_eq!(errors(&t, &job).await[0]["code"], "TaskKilledError");
    let job = create(&t, json!({"phases": [{"exec": "cat", "init": "false"}]})).await;
    add(&t, &job, &paths(&objs[..1]), true).await;
    wait(&t, &job, 60).await;
    assert_eq!(errors(&t, &job).await[0]["code"], "TaskInitError");
    let job = create(&t, json!({"phases": [{"exec": "cat", "image": "nope"}]})).await;
    add(&t, &job, &paths(&objs[..1]), true).await;
    wait(&t, &job, 60).await;
    assert_eq!(errors(&t, &job).await[0]["code"], "TaskInitError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let Some(t) = cluster(1).await else { return };
    for bad in [
        json!({"phases": []}),
        json!({"phases": [{"exec": ""}]}),
        json!({"phases": [{"type": "reduce", "exec": "x", "count": 500}]}),
        // A NUL cannot be handed to the shell: refused at creation, not failed per task.
        json!({"phases": [{"exec": "wc\u{0} -l"}]}),
        json!({"phases": [{"exec": "wc", "init": "true\u{0}"}]}),
    ] {
        let r = t
            .req(Method::POST, "/admin/jobs")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_err(r, 400, "InvalidJob").await;
    }
    let r = t
        .req(Method::POST, "/admin/jobs")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidJob").await;
    assert_err(
        t.get("/admin/jobs/nope/live/status").await,
        404,
        "JobNotFound",
    )
    .await;
    let job = create(&t, json!({"phases": [{"exec": "cat"}]})).await;
    add(&t, &job, &[], true).await;
    let r = t
        .req(Method::POST, &format!("{job}/live/in"))
        .body("/admin/stor/x")
        .send()
        .await
        .unwrap();
    assert_err(r, 409, "InvalidJobState").await;
    let s = wait(&t, &job, 30).await;
    assert_eq!(s["stats"]["tasks"], 0);
    let r = t
        .req(Method::POST, &format!("{job}/live/cancel"))
        .send()
        .await
        .unwrap();
    assert_err(r, 409, "InvalidJobState").await;
    // The agent's own API refuses a task key that would name a path.
    let bad = json!({"key": "../../x", "job": "j", "account": "admin", "phase": 0,
        "spec": {"exec": "true"}, "input": {"Reducer": 0}});
    let r = t
        .http
        .post(format!("{}/tasks/run", t.node_url(0)))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "InvalidArgument");
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_tasks_and_leaves_nothing() {
    let Some(t) = cluster(2).await else { return };
    // Seven tasks on two nodes of two slots: four run, three wait at the agents (each node is
    // handed up to three per slot) — and no more than the slots ever run.
    let objs = texts(&t, "c", 7, 5).await;
    let job = create(&t, json!({"phases": [{"exec": "sleep 61.25"}]})).await;
    add(&t, &job, &paths(&objs), false).await;
    let end = Instant::now() + Duration::from_secs(30);
    while processes_with("sleep 61.25") < 4 {
        assert!(Instant::now() < end, "tasks did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..6 {
        assert_eq!(processes_with("sleep 61.25"), 4, "more tasks than slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = t
        .req(Method::POST, &format!("{job}/live/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let s = wait(&t, &job, 20).await;
    assert_eq!(s["cancelled"], true);
    let errs = errors(&t, &job).await;
    assert_eq!(errs.len(), 7);
    assert!(errs.iter().all(|e| e["code"] == "JobCancelledError"));
    let end = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 61.25") > 0 {
        assert!(Instant::now() < end, "cancelled tasks still run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Task directories and task-group containers (their directories) all go.
    for (i, d) in [(0, "t"), (1, "t"), (0, "g"), (1, "g")] {
        let dir = t.c.node_dir(i).join("agent").join(d);
        let end = Instant::now() + Duration::from_secs(5);
        while std::fs::read_dir(&dir).unwrap().count() > 0 {
            assert!(
                Instant::now() < end,
                "task directories left in {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = t
        .req(Method::POST, &format!("{job}/live/in"))
        .body(objs[0].0.clone())
        .send()
        .await
        .unwrap();
    assert_err(r, 409, "InvalidJobState").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_job_reruns_its_tasks_elsewhere() {
    let Some(mut t) = cluster(3).await else {
        return;
    };
    let objs = texts(&t, "n", 9, 8).await;
    let expected: usize = objs.iter().map(|(_, b)| b.len()).sum();
    let job = create(
        &t,
        json!({"phases": [
            {"exec": "sleep 1.5; wc -c"},
            {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}
        ]}),
    )
    .await;
    add(&t, &job, &paths(&objs), true).await;
    // Kill a node while it runs map tasks.
    let end = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        // A map task runs in a task group's container (a directory under agent/g).
        let busy = (0..3).find(|i| {
            std::fs::read_dir(t.c.node_dir(*i).join("agent").join("g")).is_ok_and(|d| d.count() > 0)
        });
        if let Some(i) = busy {
            break i;
        }
        assert!(Instant::now() < end, "no task started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    t.c.kill_node(victim).await;
    let s = wait(&t, &job, 90).await;
    assert_eq!(outputs(&t, &job).await, vec![format!("{expected}\n")]);
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    assert!(s["stats"]["retries"].as_u64().unwrap() >= 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_mid_job_loses_nothing() {
    let Some(mut t) = cluster(2).await else {
        return;
    };
    let objs = texts(&t, "r", 6, 10).await;
    let job = create(&t, json!({"phases": [{"exec": "sleep 1; tr a-z A-Z"}]})).await;
    add(&t, &job, &paths(&objs[..3]), false).await;
    wait_running(&t, &job).await;
    t.c.restart_gateway().await.unwrap();
    t.http = reqwest::Client::new(); // its pooled connections went with the old gateway
    add(&t, &job, &paths(&objs[3..]), true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0);
    assert_uppercased(&t, &job, &objs).await;
    // Each task ran once: the restarted coordinator re-attached to the running ones.
    assert_eq!(task_log(&t).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_restart_mid_job_loses_nothing() {
    let Some(mut t) = cluster(2).await else {
        return;
    };
    let objs = texts(&t, "md", 4, 10).await;
    let job = create(&t, json!({"phases": [{"exec": "sleep 1; tr a-z A-Z"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait_running(&t, &job).await;
    t.c.restart_metadata().await.unwrap();
    t.http = reqwest::Client::new();
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    assert_uppercased(&t, &job, &objs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_inputs_in_one_job() {
    let Some(t) = cluster(3).await else { return };
    t.mkdir("/admin/stor/k").await;
    let mut inputs = Vec::new();
    let mut total = 0;
    for i in 0..1000 {
        let body = "x".repeat(i % 17 + 1);
        total += body.len();
        let p = format!("/admin/stor/k/{i}");
        t.put(&p, body).await;
        inputs.push(p);
    }
    let job = create(
        &t,
        json!({"phases": [{"exec": "wc -c"}, {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}]}),
    )
    .await;
    add(&t, &job, &inputs, true).await;
    let s = wait(&t, &job, 600).await;
    assert_eq!(s["stats"]["tasks"], 1001);
    assert_eq!(s["stats"]["errors"], 0);
    assert_eq!(outputs(&t, &job).await, vec![format!("{total}\n")]);
}

/// `mobula job …` (the real binary) against the cluster: paths on stdin, watch, get, outputs,
/// errors, list, cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_cli() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "cli", 3, 10).await;
    let run = |args: &[&str], stdin: &str| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"));
        c.arg("job")
            .args(args)
            .env("MOBULA_URL", t.c.url())
            .env("MOBULA_ACCOUNT", "admin");
        let stdin = stdin.to_string();
        async move { crate::run_with_stdin(c, &stdin).await }
    };
    let words: usize = objs.iter().map(|(_, b)| b.split_whitespace().count()).sum();
    let stdin = paths(&objs).join("\n");
    let reduce = "awk '{s+=$1} END {print s}'";
    let (ok, out, err) = run(
        &[
            "create", "-m", "wc -w", "-r", reduce, "--memory", "256", "-w",
        ],
        &stdin,
    )
    .await;
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let id = lines.next().unwrap().to_string();
    let output = lines.next().unwrap().to_string();
    assert!(
        output.starts_with(&format!("/admin/jobs/{id}/stor/reduce.1.0.")),
        "{out}"
    );
    assert!(err.contains("done"), "watch says how it ended: {err}");
    let (ok, got, _) = run(&["get", &id], "").await;
    assert!(ok);
    assert_eq!(got, format!("{words}\n"));
    let (_, outputs, _) = run(&["outputs", &id], "").await;
    assert_eq!(outputs, format!("{output}\n"));
    let (_, status, _) = run(&["status", &id], "").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["phases"][0]["memory"], 256);
    let (_, list, _) = run(&["list"], "").await;
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("done")),
        "{list}"
    );
    // Paths as arguments, an error record, cancel of an open job.
    let (ok, out, _) = run(&["create", "-m", "exit 4", "~~/stor/cli/f0000.txt"], "").await;
    assert!(ok);
    let id = out.trim().to_string();
    wait(&t, &format!("/admin/jobs/{id}"), 60).await;
    let (_, errs, _) = run(&["errors", &id], "").await;
    assert!(errs.contains("UserTaskError"), "{errs}");
    let (_, fails, _) = run(&["failures", &id], "").await;
    assert_eq!(fails, "/admin/stor/cli/f0000.txt\n");
    let (ok, out, _) = run(&["create", "-m", "cat", "--open"], "").await;
    assert!(ok);
    let id = out.trim().to_string();
    let (ok, _, err) = run(&["cancel", &id], "").await;
    assert!(ok, "{err}");
    let s = wait(&t, &format!("/admin/jobs/{id}"), 30).await;
    assert_eq!(s["cancelled"], true);
    let (ok, _, err) = run(&["create", "-m", "cat", "--image", "../x"], "").await;
    assert!(!ok);
    assert!(err.contains("InvalidJob"), "{err}");
}

/// The in-task tools act as the job's account only: another account's private objects can be
/// neither read (`mcat`) nor written (`mpipe`, `mtee`); its `public` can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_task_tools_act_only_as_the_jobs_account() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "scope", 1, 5).await;
    t.c.gw.meta.create_account("bob").await.unwrap();
    assert_eq!(
        t.put("/bob/stor/secret", "s3cret").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.put("/bob/public/open", "hello").await.status(),
        StatusCode::NO_CONTENT
    );
    for (exec, path) in [
        ("mcat /bob/stor/secret", "/bob/stor/secret"),
        ("echo x | mpipe /bob/stor/planted", "/bob/stor/planted"),
        ("echo x | mtee /bob/public/planted", "/bob/public/planted"),
        ("echo x | mpipe /admin/uploads/x", "/admin/uploads/x"),
    ] {
        let job = create(&t, json!({"phases": [{"exec": exec}]})).await;
        add(&t, &job, &paths(&objs), true).await;
        wait(&t, &job, 60).await;
        let errs = errors(&t, &job).await;
        assert_eq!(errs.len(), 1, "{exec}: {errs:?}");
        assert_eq!(errs[0]["code"], "UserTaskError");
        let stderr =
            String::from_utf8(t.get_bytes(errs[0]["stderr"].as_str().unwrap()).await).unwrap();
        assert!(
            stderr.contains("not an object this job may use"),
            "{exec}: {stderr}"
        );
        assert!(lines(&t, &format!("{job}/live/out")).await.is_empty());
        if path != "/bob/stor/secret" {
            assert_eq!(
                t.get(path).await.status(),
                StatusCode::NOT_FOUND,
                "{path} was written"
            );
        }
    }
    assert_eq!(
        String::from_utf8(t.get_bytes("/bob/stor/secret").await).unwrap(),
        "s3cret"
    );
    let job = create(&t, json!({"phases": [{"exec": "mcat /bob/public/open"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait(&t, &job, 60).await;
    assert_eq!(outputs(&t, &job).await, vec!["hello".to_string()]);
}

/// Assets are bound read-only at `/assets/<path>`, `init` runs first in the same container,
/// and a zero-byte input runs like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_init_and_empty_inputs() {
    let Some(t) = cluster(3).await else { return };
    let objs = texts(&t, "a", 2, 5).await;
    assert_eq!(
        t.put("/admin/stor/a/lib.txt", "from the asset\n")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let r = t
        .req(Method::PUT, "/admin/stor/a/empty")
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let job = create(
        &t,
        json!({"phases": [{
            "exec": "cat /tmp/ready /assets/admin/stor/a/lib.txt; wc -c < $MANTA_INPUT_FILE; (echo x > /assets/admin/stor/a/lib.txt) 2>/dev/null || echo read-only",
            "init": "echo initialised > /tmp/ready; test -r /assets/admin/stor/a/lib.txt",
            "assets": ["/admin/stor/a/lib.txt"]
        }]}),
    )
    .await;
    let mut inputs = paths(&objs);
    inputs.push("/admin/stor/a/empty".into());
    add(&t, &job, &inputs, true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    let mut got = outputs(&t, &job).await;
    got.sort();
    let mut want: Vec<String> = objs
        .iter()
        .map(|(_, b)| b.len())
        .chain([0])
        .map(|n| format!("initialised\nfrom the asset\n{n}\nread-only\n"))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

/// A plain command (`wc -c`, `env`) runs without bash but sees what it would under
/// `bash -c`: the input on stdin, the job's environment with `PWD` and `SHLVL`, and a program
/// that is not there fails as under bash (exit 127, "command not found" in its stderr object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_commands_run_as_under_bash() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "p", 1, 7).await;
    let job = create(&t, json!({"phases": [{"exec": "wc -c"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait(&t, &job, 60).await;
    assert_eq!(
        outputs(&t, &job).await,
        vec![format!("{}\n", objs[0].1.len())]
    );
    let job = create(&t, json!({"phases": [{"exec": "env"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait(&t, &job, 60).await;
    let env = outputs(&t, &job).await.remove(0);
    for want in [
        "PWD=/tmp".to_string(),
        "SHLVL=0".into(),
        format!("MANTA_INPUT_OBJECT={}", objs[0].0),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in {env}");
    }
    let job = create(&t, json!({"phases": [{"exec": "no-such-program -x"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait(&t, &job, 60).await;
    let e = errors(&t, &job).await.remove(0);
    assert_eq!(e["code"], "UserTaskError");
    assert!(e["message"].as_str().unwrap().contains("127"), "{e}");
    let stderr = String::from_utf8(t.get_bytes(e["stderr"].as_str().unwrap()).await).unwrap();
    assert_eq!(stderr, "no-such-program: command not found\n");
}
