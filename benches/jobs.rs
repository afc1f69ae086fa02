//! Jobs against the physical limit and a peer: word count over TOTAL_MIB of text in FILES
//! objects by a Mobula job (map `wc -w`, reduce a sum) on `mobula up` (release binary, three
//! nodes on this machine), beside the same count by a local `xargs -P2 wc -w | awk` pipeline over
//! the same files (nothing to schedule, no copies, no sandbox: the physical limit here), the
//! same pipeline with each `wc` in a bubblewrap container when `bwrap` is installed (what a
//! container per input costs alone), and PySpark `local[2]` when `PYSPARK_PYTHON_BIN` names a
//! Python with pyspark. Then the
//! end-to-end latency of a no-op job (1 input, `cat`: create, add input and end, poll status
//! until done). Then the per-task constant: the same job over TINY objects of a few bytes, as CPU
//! per task (what Mobula costs beyond the command itself). Every count is checked against the
//! others. Needs root (task sandboxes).
//!
//! `cargo bench --bench jobs`. Env: FILES (1000), TOTAL_MIB (1024), NOOP (30 runs; 0 skips), TINY (1000
//! objects; 0 skips), SMALL (10,000 objects of 4 KiB: task overhead at scale; 0 skips), SLOTS (tasks per node; default: `up`'s), DIR (where the files go).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/words.rs"]
mod words;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn up(dir: &std::path::Path) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    // Plain volume: the figures stay comparable with earlier sessions' (ext4).
    cmd.args([
        "up",
        "--s3-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--no-auth",
        "--volume",
        "plain",
        "--listen",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(dir);
    if let Ok(s) = std::env::var("SLOTS") {
        cmd.args(["--slots", &s]);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        if let Some(u) = l.strip_prefix("mobula up: gateway listening on ") {
            url = u.trim().to_string();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

async fn job(http: &reqwest::Client, url: &str, phases: serde_json::Value, inputs: &str) -> String {
    let r = http
        .post(format!("{url}/admin/jobs"))
        .json(&serde_json::json!({ "phases": phases }))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .post(format!("{url}{loc}/live/in?end=true"))
        .body(inputs.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // Follow the job without polling: each status carries its version, and `?since=` waits
    // for the next one (as `mobula job create --watch` does).
    let mut since = String::new();
    loop {
        let r = http
            .get(format!("{url}{loc}/live/status{since}"))
            .send()
            .await
            .unwrap();
        let version = r.headers()["job-version"].to_str().unwrap().to_string();
        let s: serde_json::Value = r.json().await.unwrap();
        if s["state"] == "done" {
            assert_eq!(s["stats"]["errors"], 0, "{s}");
            break;
        }
        since = format!("?since={version}");
    }
    let out = http
        .get(format!("{url}{loc}/live/out"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first = out.lines().next().unwrap_or_default().to_string();
    http.get(format!("{url}{first}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(2, |n| n.get()) as f64
}

/// The word-count job over `n` objects `<name>/fNNNNN` of `body(i)`, checked against the
/// words of the bodies: (seconds, ms of CPU per task, % of the CPUs busy).
async fn overhead(
    http: &reqwest::Client,
    url: &str,
    dir: &std::path::Path,
    wc: &serde_json::Value,
    name: &str,
    n: usize,
    body: impl Fn(usize) -> Vec<u8>,
) -> (f64, f64, f64) {
    let want: usize = (0..n)
        .map(|i| String::from_utf8_lossy(&body(i)).split_whitespace().count())
        .sum();
    let inputs = store(http, url, name, n, body, None).await;
    settle(dir).await;
    let (t, cpu0) = (Instant::now(), busy());
    let words = job(http, url, wc.clone(), &inputs).await;
    let secs = t.elapsed().as_secs_f64();
    let cpu = busy_since(cpu0);
    assert_eq!(words.trim(), want.to_string());
    (secs, secs * cores() * cpu * 1000.0 / n as f64, cpu * 100.0)
}

/// Store `n` objects `/admin/stor/<name>/fNNNNN` with `body(i)` (and as files in `local`);
/// their paths, one per line.
async fn store(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    n: usize,
    body: impl Fn(usize) -> Vec<u8>,
    local: Option<&std::path::Path>,
) -> String {
    http.put(format!("{url}/admin/stor/{name}"))
        .header("content-type", "application/json; type=directory")
        .send()
        .await
        .unwrap();
    let mut paths = String::new();
    for i in 0..n {
        let body = body(i);
        if let Some(dir) = local {
            std::fs::File::create(dir.join(format!("f{i:05}")))
                .unwrap()
                .write_all(&body)
                .unwrap();
        }
        let p = format!("/admin/stor/{name}/f{i:05}");
        let r = http
            .put(format!("{url}{p}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        paths.push_str(&p);
        paths.push('\n');
    }
    paths
}

/// Let what the set-up wrote reach the disk, so the timed runs do not compete with it.
async fn settle(dir: &std::path::Path) {
    shell("sync", dir);
    tokio::time::sleep(Duration::from_secs(3)).await;
}

fn shell(cmd: &str, dir: &std::path::Path) -> (f64, String) {
    let t = Instant::now();
    let o = std::process::Command::new("bash")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
    )
}

/// Whether `prog` is on the PATH.
fn which(prog: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// (busy, total) jiffies of all CPUs.
fn busy() -> (u64, u64) {
    let v = cpu::fields();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Fraction of the CPUs busy since `from`.
fn busy_since(from: (u64, u64)) -> f64 {
    let now = busy();
    (now.0 - from.0) as f64 / (now.1 - from.1).max(1) as f64
}

#[tokio::main]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("jobs bench: needs root (task sandboxes); skipped");
        return;
    }
    let (files, total) = (env("FILES", 1000), env("TOTAL_MIB", 1024) << 20);
    // DIR: where the cluster's and the pipeline's files go (default /var/tmp). On an ext4
    // without a journal (this VM's root), every inode allocation skips the inodes deleted in
    // the last minutes one by one (`recently_deleted`), so a run right after another one's
    // clean-up is slower for reasons outside both contenders: point DIR at a fresh file
    // system (e.g. a journaled ext4 loop image) for comparable runs.
    let base = std::env::var("DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local).unwrap();
    let (_child, url) = up(&dir.path().join("up")).await;
    let http = reqwest::Client::new();
    eprintln!("writing {files} objects, {} MiB in all", total >> 20);
    let inputs = store(
        &http,
        &url,
        "wc",
        files,
        |i| words::text(i, total / files),
        Some(&local),
    )
    .await;
    // Warm the page cache for both sides alike, and let the writes of the set-up (3 GiB: two
    // copies and the local files) reach the disk first, so neither side competes with them.
    shell("cat f* > /dev/null", &local);
    settle(&local).await;
    let wc = serde_json::json!([
        {"type": "map", "exec": "wc -w"},
        {"type": "reduce", "exec": "awk '{s+=$1} END {print s}'"}
    ]);
    let t = Instant::now();
    let cpu = busy();
    let mobula = job(&http, &url, wc.clone(), &inputs)
        .await
        .trim()
        .to_string();
    let mobula_s = t.elapsed().as_secs_f64();
    let cpu = busy_since(cpu);
    let (pipe_s, pipe) = shell(
        "ls | xargs -P2 -n1 wc -w | awk '{s+=$1} END {print s}'",
        &local,
    );
    assert_eq!(mobula, pipe, "word counts differ");
    println!(
        "word count, {files} objects, {} MiB: {mobula} words",
        total >> 20
    );
    println!(
        "  mobula job              {mobula_s:8.2} s   (CPU busy {:.0}%)",
        cpu * 100.0
    );
    println!(
        "  xargs -P2 wc | awk      {pipe_s:8.2} s   mobula/pipeline = {:.2}x",
        mobula_s / pipe_s
    );
    // The same pipeline with each `wc` in a container of its own (bubblewrap: namespaces,
    // fresh /proc, /dev and /tmp; no cgroups, seccomp or overlay): what a container per input
    // costs by itself on this machine.
    if which("bwrap") {
        let (s, n) = shell(
            "ls | xargs -P2 -n1 bwrap --ro-bind / / --unshare-all --tmpfs /tmp --proc /proc \
             --dev /dev --die-with-parent wc -w | awk '{s+=$1} END {print s}'",
            &local,
        );
        assert_eq!(n, mobula, "sandboxed pipeline's count differs");
        println!(
            "  same, each wc in bwrap  {s:8.2} s   mobula/sandboxed pipeline = {:.2}x",
            mobula_s / s
        );
    }
    if let Ok(py) = std::env::var("PYSPARK_PYTHON_BIN") {
        let script = "import sys\nfrom pyspark.sql import SparkSession\n\
            s = SparkSession.builder.master('local[2]').getOrCreate()\n\
            s.sparkContext.setLogLevel('ERROR')\n\
            import time; t = time.time()\n\
            n = s.sparkContext.textFile(sys.argv[1] + '/f*').map(lambda l: len(l.split())).sum()\n\
            print(n, time.time() - t)\n";
        std::fs::write(dir.path().join("wc.py"), script).unwrap();
        let (_, out) = shell(
            &format!(
                "{py} {}/wc.py {} 2>/dev/null | tail -1",
                dir.path().display(),
                local.display()
            ),
            dir.path(),
        );
        let (n, secs) = out.split_once(' ').unwrap();
        assert_eq!(n, mobula, "pyspark count differs");
        let secs: f64 = secs.parse().unwrap();
        println!("  pyspark local[2]        {secs:8.2} s   mobula/pyspark = {:.2}x  (job only, JVM start excluded)", mobula_s / secs);
    }
    // The per-task constant: word count over objects of a few bytes.
    let tiny = env("TINY", 1000);
    if tiny > 0 {
        let body = |i| format!("tiny object {i}\n").into_bytes();
        let (secs, per_task, busy) =
            overhead(&http, &url, dir.path(), &wc, "tiny", tiny, body).await;
        println!(
            "per-task constant, {tiny} tiny inputs: {secs:.2} s, {per_task:.1} ms of CPU per task (CPUs {busy:.0}% busy)"
        );
    }
    // Task overhead alone at scale: 10,000 inputs of 4 KiB (SMALL=0 skips).
    let small = env("SMALL", 10_000);
    if small > 0 {
        let body = |i| words::text(i, 4096);
        let (secs, per_task, busy) =
            overhead(&http, &url, dir.path(), &wc, "small", small, body).await;
        println!(
            "{small} inputs of 4 KiB: {secs:.2} s, {:.0} tasks per second per core, {per_task:.1} \
             ms of CPU per task (CPUs {busy:.0}% busy)",
            small as f64 / secs / cores()
        );
    }
    // No-op job latency.
    http.put(format!("{url}/admin/stor/noop"))
        .body("x\n")
        .send()
        .await
        .unwrap();
    let mut lat = Vec::new();
    for _ in 0..env("NOOP", 30) {
        let t = Instant::now();
        let out = job(
            &http,
            &url,
            serde_json::json!([{"exec": "cat"}]),
            "/admin/stor/noop",
        )
        .await;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(out, "x\n");
    }
    let show = |what: &str, lat: &mut Vec<f64>| {
        if lat.is_empty() {
            return; // NOOP=0: skipped
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "no-op job (1 input, cat) {what}, {} runs: p50 {:.1} ms, p90 {:.1} ms, min {:.1} ms",
            lat.len(),
            lat[lat.len() / 2],
            lat[lat.len() * 9 / 10],
            lat[0]
        );
    };
    show("over HTTP", &mut lat);
    // The same through the CLI, as a user runs it: `mobula job create -m cat --watch` (which
    // returns when the job is done), then `mobula job get` (the output's contents).
    let mut lat = Vec::new();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env("MOBULA_URL", &url)
            .env("MOBULA_ACCOUNT", "admin")
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for _ in 0..env("NOOP", 30) {
        let t = Instant::now();
        let id = cli(&["job", "create", "-m", "cat", "--watch", "/admin/stor/noop"]);
        // It prints the job's id, then (when done) its outputs.
        let id = id.lines().next().unwrap().to_string();
        let out = cli(&["job", "get", &id]);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(out, "x\n");
    }
    show("through the CLI (create --watch, then get)", &mut lat);
}
