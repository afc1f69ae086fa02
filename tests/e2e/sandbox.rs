//! The task sandbox, each property proven by trying to break it from inside a real container
//! (real namespaces, cgroups, overlay, seccomp; the helper is the built `mobula` binary).
//! Needs root: skipped with a reason elsewhere, a failure under MOBULA_REQUIRE_PRIVILEGED=1.

use std::time::{Duration, Instant};

use mobula_sandbox::{Bind, Captured, Input, Sandbox, SandboxConfig, TaskSpec};

pub const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// A sandbox in a fresh node directory, or None (with the reason printed) without root.
pub fn sandbox() -> Option<(Sandbox, tempfile::TempDir)> {
    if !nix::unistd::geteuid().is_root() {
        let why = "sandbox tests need root (namespaces, cgroups, mounts)";
        crate::skip(why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SandboxConfig::under(dir.path()).unwrap();
    cfg.helper = BIN.into();
    Some((Sandbox::new(cfg).unwrap(), dir))
}

pub async fn sh(sb: &Sandbox, cmd: &str, f: impl FnOnce(&mut TaskSpec)) -> Captured {
    let mut spec = TaskSpec::shell(cmd);
    f(&mut spec);
    let c = sb.run(&spec, Input::Null, 1 << 20).await.unwrap();
    assert!(c.report.error.is_none(), "sandbox failed: {:?}", c.report);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Host processes whose command line (arguments joined by spaces) starts with `needle`.
pub fn host_procs(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).replace('\0', " ").starts_with(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn root_usr_and_inputs_are_read_only_and_scratch_is_per_task() {
    let Some((sb, dir)) = sandbox() else { return };
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "the input\n").unwrap();
    let bind = |s: &mut TaskSpec| {
        s.binds.push(Bind {
            host: input.to_string_lossy().into(),
            inside: "/manta/acct/stor/in.txt".into(),
            writable: false,
        })
    };
    let c = sh(
        &sb,
        "cat /manta/acct/stor/in.txt; ls /manta/acct/stor; \
         for f in /x /usr/x /etc/passwd /manta/acct/stor/in.txt /manta/acct/stor/new /manta/new; do \
           (echo hi > $f) 2>/dev/null && echo WROTE $f; done; \
         mkdir /manta/acct/d /assets/d 2>/dev/null && echo MADE DIRS; \
         echo kept > /tmp/mine; cat /tmp/mine",
        bind,
    )
    .await;
    let out = text(&c.stdout);
    assert_eq!(out, "the input\nin.txt\nkept\n", "{out}{}", text(&c.stderr));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "the input\n");
    // The mount points of the input were made in the task's scratch space, not in the image.
    let image = dir.path().join("images/host/rootfs");
    assert!(image.join("manta").is_dir(), "{}", image.display());
    assert!(
        !image.join("manta/acct").exists(),
        "the host image was written to"
    );
    let c = sh(&sb, "ls -A /tmp; cat /tmp/mine", |_| {}).await;
    assert_eq!(
        text(&c.stdout),
        "",
        "a file written by one task is absent in the next"
    );
    assert_ne!(c.report.exit_code, Some(0));
}

#[tokio::test]
async fn process_and_host_views_are_private() {
    let Some((sb, dir)) = sandbox() else { return };
    std::fs::write(dir.path().join("node-secret"), "data").unwrap();
    let node_data = dir.path().display().to_string();
    let c = sh(
        &sb,
        &format!(
            "ls /proc | grep -c '^[0-9]'; echo $$; hostname; \
             cat /etc/shadow 2>&1; ls {node_data} 2>&1; ls -A /root /home; \
             ls /proc/1/fd /proc/1/root/ 2>&1 | grep -v 'Permission denied'; \
             grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status"
        ),
        |_| {},
    )
    .await;
    let out = text(&c.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let pids: u32 = lines[0].parse().unwrap();
    assert!(pids <= 4, "the task sees only its own processes: {out}");
    assert_eq!(lines[1], "2", "the task is pid 2 under its own init");
    assert_eq!(lines[2], "task");
    assert!(out.contains("/etc/shadow: No such file"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(!out.contains("node-secret"), "{out}");
    for want in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
}

#[tokio::test]
async fn no_network_and_no_host_sockets() {
    let Some((sb, _dir)) = sandbox() else { return };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mobula-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let _unix = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let c = sh(
        &sb,
        &format!(
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
             (echo x > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo TCP-CONNECTED; \
             python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('\\0{name}'); print('UNIX-CONNECTED')\" 2>/dev/null; \
             echo done"
        ),
        |_| {},
    )
    .await;
    assert_eq!(text(&c.stdout), "lo\ndone\n", "{}", text(&c.stderr));
    tcp.set_nonblocking(true).unwrap();
    assert!(tcp.accept().is_err(), "nothing reached the host port");
}

#[tokio::test]
async fn namespace_mount_and_ptrace_are_refused() {
    let Some((sb, _dir)) = sandbox() else { return };
    let c = sh(
        &sb,
        "unshare -r true 2>/dev/null || echo unshare-refused; \
         unshare -n true 2>/dev/null || echo unshare-net-refused; \
         mount -t tmpfs x /mnt 2>/dev/null || echo mount-refused; \
         python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); \
           print(\"ptrace\", l.ptrace(0,0,0,0), os.strerror(ctypes.get_errno()))'",
        |_| {},
    )
    .await;
    assert_eq!(
        text(&c.stdout),
        "unshare-refused\nunshare-net-refused\nmount-refused\nptrace -1 Operation not permitted\n",
        "{}",
        text(&c.stderr)
    );
}

#[tokio::test]
async fn memory_pids_disk_and_cpu_limits_hold() {
    let Some((sb, _dir)) = sandbox() else { return };
    let c = sh(
        &sb,
        "python3 -c 'x = bytearray(300 << 20); print(len(x))'",
        |s| s.limits.memory_mib = 64,
    )
    .await;
    assert!(c.report.oom_killed, "memory hog OOM-killed: {:?}", c.report);
    assert_eq!(c.report.signal, Some(9));
    assert!(c.stdout.is_empty());

    let storm = "import os, time\nn = 0\nfor i in range(500):\n  try:\n    pid = os.fork()\n  except OSError:\n    break\n  if pid == 0:\n    time.sleep(30)\n    os._exit(0)\n  n += 1\nprint(n)";
    let c = sh(&sb, &format!("python3 -c '{storm}'"), |s| {
        s.limits.pids = 32
    })
    .await;
    let forked: u32 = text(&c.stdout).trim().parse().unwrap();
    assert!(forked < 32, "fork storm bounded: {forked}");
    assert!(c.report.pids_limit_hit, "{:?}", c.report);

    let c = sh(&sb, "dd if=/dev/zero of=/tmp/big bs=1M count=64", |s| {
        s.limits.disk_mib = 16
    })
    .await;
    assert!(
        text(&c.stderr).contains("No space left on device"),
        "{}",
        text(&c.stderr)
    );
    assert!(c.report.disk_full);
    assert_ne!(c.report.exit_code, Some(0));

    let t = Instant::now();
    let c = sh(&sb, "timeout 2 sh -c 'while :; do :; done'; true", |s| {
        s.limits.cpu = 0.2;
        s.limits.timeout_ms = 20_000;
    })
    .await;
    let wall = t.elapsed().as_millis() as u64;
    let cpu = c.report.cpu_user_ms + c.report.cpu_sys_ms;
    assert!(wall >= 2000);
    assert!(
        cpu <= wall / 5 + 300,
        "CPU capped at 0.2 cores: {cpu} ms in {wall} ms"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let Some((sb, _dir)) = sandbox() else { return };
    let tag = format!("1000.{}", std::process::id() % 1000 + 1);
    let c = sh(&sb, &format!("(sleep {tag}1 &); sleep {tag}2"), |s| {
        s.limits.timeout_ms = 500
    })
    .await;
    assert!(c.report.timed_out && c.report.killed(), "{:?}", c.report);
    assert!(
        host_procs(&format!("sleep {tag}")).is_empty(),
        "no survivor"
    );
}

#[tokio::test]
async fn killing_the_supervisor_leaves_no_survivor() {
    let Some((sb, dir)) = sandbox() else { return };
    // The CLI (the supervising process) SIGKILLed.
    let tag = format!("2000.{}", std::process::id() % 1000 + 1);
    let mut cli = tokio::process::Command::new(BIN)
        .args(["sandbox", "run", "--node-dir"])
        .arg(dir.path())
        .args([
            "--",
            "bash",
            "-c",
            &format!("(sleep {tag}1 &); sleep {tag}2"),
        ])
        .spawn()
        .unwrap();
    let watch = format!("sleep {tag}");
    wait_until(|| host_procs(&watch).len() == 2).await;
    cli.start_kill().unwrap();
    cli.wait().await.unwrap();
    wait_until(|| host_procs(&watch).is_empty()).await;

    // The helper itself SIGKILLed: same, and the next sweep removes its cgroups.
    let t = sb
        .spawn(&TaskSpec::shell(&format!("sleep {tag}3")), Input::Null)
        .unwrap();
    let watch = format!("sleep {tag}3");
    wait_until(|| host_procs(&watch).len() == 1).await;
    let helper = t.helper_pid().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = t.wait().await.unwrap();
    assert!(r.error.is_some());
    wait_until(|| host_procs(&watch).is_empty()).await;
    let leaf = format!("h{helper}-");
    let has_leaf = || {
        mobula_sandbox::cgroup::leaves()
            .iter()
            .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(&leaf))
    };
    // A crashed helper leaves its cgroup behind until a sweep (this one, or that of any other
    // sandbox starting meanwhile) removes it.
    mobula_sandbox::cgroup::sweep().unwrap();
    assert!(!has_leaf(), "the sweep removes it");
}

pub async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_task_cannot_see_another_running_tasks_scratch_or_processes() {
    let Some((sb, _dir)) = sandbox() else { return };
    let tag = format!("s3cret-{}", std::process::id());
    let a = sb
        .spawn(
            &TaskSpec::shell(&format!(
                "echo {tag} > /tmp/{tag}; echo {tag} > /dev/shm/{tag}; echo ready; sleep 30.{}",
                std::process::id() % 1000 + 1
            )),
            Input::Null,
        )
        .unwrap();
    // Wait until task A has written its files.
    let sleeping = format!("sleep 30.{}", std::process::id() % 1000 + 1);
    wait_until(|| host_procs(&sleeping).len() == 1).await;
    let c = sh(
        &sb,
        &format!(
            "find / -xdev -name '{tag}*' 2>/dev/null; ls /dev/shm /tmp; \
             grep -rl {tag} /tmp /dev/shm 2>/dev/null; ps -e 2>/dev/null | grep -c sleep"
        ),
        |_| {},
    )
    .await;
    assert_eq!(
        text(&c.stdout),
        "/dev/shm:\n\n/tmp:\n0\n",
        "{}",
        text(&c.stderr)
    );
    a.cancel();
    let r = a.wait().await.unwrap();
    assert!(r.cancelled);
}

/// The README's first sandbox example, as a newcomer runs it: in a fresh directory, with the
/// default (relative) `--node-dir`.
#[tokio::test]
async fn the_readme_example_runs_with_the_default_node_dir() {
    let Some((_sb, _dir)) = sandbox() else { return };
    let cwd = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args(["sandbox", "run", "--", "bash", "-c", "id"])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout {stdout:?} stderr {stderr:?}");
    assert!(stdout.starts_with("uid="), "{stdout:?}");
    assert!(cwd.path().join("mobula-data/nodes/0/sandbox").is_dir());
    // A relative path given explicitly works the same.
    let out = tokio::process::Command::new(BIN)
        .current_dir(cwd.path())
        .args(["sandbox", "run", "--node-dir", "n1", "--", "true"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}
