//! Sandbox spawn cost: spawn + run `true` + teardown, at concurrency 2, for Mobula's sandbox
//! (namespaces, overlay root, cgroups, seccomp), `bwrap --unshare-all` and a plain fork/exec of
//! `true`, all started the same way from the same tokio runtime in one run.
//!
//! `cargo bench --bench sandbox` (root; needs `bwrap`: apt-get install bubblewrap).
//! Env: N (spawns per contender, default 1000).

use std::process::Stdio;
use std::time::{Duration, Instant};

use mobula_sandbox::{Sandbox, SandboxConfig, TaskSpec};

const CONCURRENCY: usize = 2;

struct Stats {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

/// Latencies and busy time of one contender, accumulated over interleaved rounds.
#[derive(Default)]
struct Samples {
    lat: Vec<Duration>,
    busy: Duration,
}

impl Samples {
    fn stats(mut self) -> Stats {
        self.lat.sort();
        let n = self.lat.len();
        Stats {
            p50: self.lat[n / 2],
            p99: self.lat[n * 99 / 100],
            per_sec: n as f64 / self.busy.as_secs_f64(),
        }
    }
}

/// One round: `n` runs of `f`, `CONCURRENCY` at a time.
async fn round<F, Fut>(n: usize, f: &F, into: &mut Samples)
where
    F: Fn() -> Fut + Sync,
    Fut: std::future::Future<Output = ()>,
{
    let t = Instant::now();
    let lat = std::sync::Mutex::new(Vec::with_capacity(n));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
            let s = Instant::now();
            f().await;
            lat.lock().unwrap().push(s.elapsed());
        }
    };
    futures::future::join_all((0..CONCURRENCY).map(|_| worker())).await;
    into.busy += t.elapsed();
    into.lat.extend(lat.into_inner().unwrap());
}

async fn command(argv: &[&str]) {
    let st = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(
        st.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn row(name: &str, s: &Stats, base: Option<&Stats>) {
    let ratio = base
        .map(|b| format!("{:.2}×", s.p50.as_secs_f64() / b.p50.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "| {name} | {:.2} ms | {:.2} ms | {:.0}/s | {ratio} |",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.per_sec
    );
}

#[tokio::main]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("sandbox bench: needs root; skipped");
        return;
    }
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SandboxConfig::under(dir.path()).unwrap();
    cfg.helper = env!("CARGO_BIN_EXE_mobula").into();
    let sb = Sandbox::new(cfg).unwrap();
    let spec = TaskSpec::new(vec!["true".into()]);
    let mobula = || async {
        let c = sb
            .run(&spec, mobula_sandbox::Input::Null, 1024)
            .await
            .unwrap();
        assert!(c.report.success(), "{:?}", c.report);
    };
    let bwrap_argv = [
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--unshare-all",
        "--tmpfs",
        "/tmp",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "true",
    ];
    let has_bwrap = std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok();
    let bwrap = || command(&bwrap_argv);
    let plain = || command(&["true"]);
    // Warm up, then interleave the contenders in rounds of 50 so that they share the machine's
    // moods (this VM's speed drifts by tens of percent over a minute).
    let (mut m, mut b, mut p) = (Samples::default(), Samples::default(), Samples::default());
    round(20, &mobula, &mut Samples::default()).await;
    for _ in 0..n.div_ceil(50) {
        round(50, &mobula, &mut m).await;
        if has_bwrap {
            round(50, &bwrap, &mut b).await;
        }
        round(50, &plain, &mut p).await;
    }
    let (mobula, plain) = (m.stats(), p.stats());
    let bwrap = has_bwrap.then(|| b.stats());
    println!("spawn + run `true` + teardown, concurrency {CONCURRENCY}, {n} each");
    println!("| contender | p50 | p99 | throughput | p50 vs bwrap |");
    println!("|---|---|---|---|---|");
    row("mobula sandbox", &mobula, bwrap.as_ref());
    match &bwrap {
        Some(b) => row("bwrap --unshare-all", b, Some(b)),
        None => println!("| bwrap | not installed (apt-get install bubblewrap) | | | |"),
    }
    row("plain fork/exec `true`", &plain, bwrap.as_ref());
}
