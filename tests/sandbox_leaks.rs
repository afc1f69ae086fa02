//! 1,000 sequential and 100 concurrent sandbox spawns, then task groups (500 tasks in one
//! container, each with an input mounted in; 20 containers at once; one cancelled and one dropped
//! mid-task) leak no mount, cgroup, fd, process, report or scratch directory. Its own test binary, so nothing else runs in this process meanwhile and
//! the counts can be exact. Needs root (a failure under MOBULA_REQUIRE_PRIVILEGED=1).

use mobula_sandbox::{cgroup, Bind, Input, Sandbox, SandboxConfig, TaskSpec};
use tokio::io::AsyncReadExt;

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
    // Task groups.
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "x\n").unwrap();
    let mut task = TaskSpec::shell("cat /manta/in");
    task.binds.push(Bind {
        host: input.to_string_lossy().into(),
        inside: "/manta/in".into(),
        writable: false,
    });
    let group = |n: usize| {
        let (sb, task) = (&sb, &task);
        async move {
            let mut g = sb.group(&TaskSpec::shell("")).unwrap();
            for _ in 0..n {
                let s = g.spawn(task, Input::Null).unwrap();
                let mut out = String::new();
                s.stdout.unwrap().read_to_string(&mut out).await.unwrap();
                let r = g.wait().await.unwrap();
                assert!(r.success(), "{r:?}");
                assert_eq!(out, "x\n");
            }
            g.close().await;
        }
    };
    group(500).await;
    futures::future::join_all((0..20).map(|_| group(5))).await;
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    let s = g.spawn(&TaskSpec::shell("sleep 30"), Input::Null).unwrap();
    g.cancel();
    assert!(g.wait().await.unwrap().cancelled);
    g.close().await;
    drop(s);
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    let s = g.spawn(&TaskSpec::shell("sleep 30"), Input::Null).unwrap();
    let helper = g.helper_pid().unwrap();
    drop((g, s));
    for _ in 0..250 {
        if !std::path::Path::new(&format!("/proc/{helper}")).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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
