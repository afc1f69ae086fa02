//! 1,000 sequential and 100 concurrent sandbox spawns leak no mount, cgroup, fd, process, report
//! or scratch directory. Its own test binary, so nothing else runs in this process meanwhile and
//! the counts can be exact. Needs root (a failure under MOBULA_REQUIRE_PRIVILEGED=1).

use mobula_sandbox::{cgroup, Input, Sandbox, SandboxConfig, TaskSpec};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Processes whose parent is this process.
fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)
                        .map(|p| p == me)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sequential_and_a_hundred_concurrent_spawns_leak_nothing() {
    if !nix::unistd::geteuid().is_root() {
        let why = "sandbox tests need root";
        assert!(
            std::env::var("MOBULA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (leaves, fds) = (cgroup::leaves(), count("/proc/self/fd"));
    let mut cfg = SandboxConfig::under(dir.path()).unwrap();
    cfg.helper = env!("CARGO_BIN_EXE_mobula").into();
    let sb = Sandbox::new(cfg).unwrap();
    let run = |cmd: String| {
        let sb = &sb;
        async move {
            let c = sb
                .run(&TaskSpec::shell(&cmd), Input::Null, 1024)
                .await
                .unwrap();
            assert!(c.report.success(), "{:?}", c.report);
            c.stdout
        }
    };
    for _ in 0..1000 {
        run("true".into()).await;
    }
    let outs = futures::future::join_all((0..100).map(|i| run(format!("echo {i}")))).await;
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(String::from_utf8_lossy(o), format!("{i}\n"));
    }
    // The zygote (a child of this process, holding pooled network namespaces) goes with it.
    drop(sb);
    assert_eq!(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        mounts,
        "mounts"
    );
    assert_eq!(cgroup::leaves(), leaves, "cgroup leaves");
    assert_eq!(count("/proc/self/fd"), fds, "open fds");
    assert_eq!(children(), Vec::<i32>::new(), "child processes");
    let sandbox = dir.path().join("sandbox");
    assert_eq!(
        count(&sandbox.join("reports").to_string_lossy()),
        0,
        "reports"
    );
    assert_eq!(
        count(&sandbox.join("mnt").to_string_lossy()),
        0,
        "scratch on the host"
    );
}
