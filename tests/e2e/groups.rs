//! Task groups in the sandbox (SPEC §5): one container serves successive tasks of a phase.
//! Each property is checked from inside real containers: what carries over (`/tmp`), what never
//! does (processes, inputs, another group's scratch), per-task limits and accounting, and that
//! cancelling or closing a group leaves no process, mount or cgroup. Needs root.

use mobula_sandbox::group::Group;
use mobula_sandbox::{cgroup, Bind, Input, Report, TaskSpec};
use tokio::io::AsyncReadExt;

use crate::sandbox::{host_procs, sandbox};

/// Run `cmd` as the group's next task with `inputs` (host path, path below /manta).
async fn task(g: &mut Group, cmd: &str, inputs: &[(&std::path::Path, &str)]) -> (Report, String) {
    task_with(g, cmd, inputs, |_| {}).await
}

async fn task_with(
    g: &mut Group,
    cmd: &str,
    inputs: &[(&std::path::Path, &str)],
    f: impl FnOnce(&mut TaskSpec),
) -> (Report, String) {
    let mut spec = TaskSpec::shell(cmd);
    for (host, inside) in inputs {
        spec.binds.push(Bind {
            host: host.to_string_lossy().into(),
            inside: inside.to_string(),
            writable: false,
        });
    }
    f(&mut spec);
    let s = g.spawn(&spec, Input::Null).unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let (o, e) = (s.stdout, s.stderr);
    tokio::join!(
        async {
            if let Some(mut o) = o {
                o.read_to_string(&mut out).await.unwrap();
            }
        },
        async {
            if let Some(mut e) = e {
                e.read_to_string(&mut err).await.unwrap();
            }
        }
    );
    let r = g.wait().await.unwrap();
    assert!(r.error.is_none(), "sandbox failed: {r:?} {err}");
    (r, out)
}

fn mounts_under(dir: &std::path::Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .count()
}

#[tokio::test]
async fn a_groups_tasks_share_tmp_and_nothing_else() {
    let Some((sb, dir)) = sandbox() else { return };
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, "input a\n").unwrap();
    std::fs::write(&b, "input b\n").unwrap();
    let tag = format!("1000.{}", std::process::id() % 1000 + 7);
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    let (r, out) = task(
        &mut g,
        &format!(
            "echo kept > /tmp/state; (sleep {tag} &); sleep {tag} & \
             cat /manta/acct/stor/a.txt; echo x > /manta/acct/stor/new 2>/dev/null || echo ro"
        ),
        &[(&a, "/manta/acct/stor/a.txt")],
    )
    .await;
    assert!(r.success(), "{r:?}");
    assert_eq!(out, "input a\nro\n");
    // The first task's background processes died before its report came back.
    assert!(
        host_procs(&format!("sleep {tag}")).is_empty(),
        "no survivor"
    );
    let (r, out) = task(
        &mut g,
        "cat /tmp/state; find /manta | sort; cat /manta/acct/stor/d/b.txt; \
         ls /proc | grep -c '^[0-9]'",
        &[(&b, "/manta/acct/stor/d/b.txt")],
    )
    .await;
    assert!(r.success(), "{r:?}");
    // /tmp carried over; /manta holds only the new input; the task sees only pid 1, its shell
    // and the commands of its pipeline (ls, grep).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "kept",
            "/manta",
            "/manta/acct",
            "/manta/acct/stor",
            "/manta/acct/stor/d",
            "/manta/acct/stor/d/b.txt"
        ]
    );
    assert_eq!(lines[6], "input b");
    assert!(lines[7].parse::<u32>().unwrap() <= 4, "{out}");
    assert_eq!(g.tasks, 2);

    // Another group (another job or phase) starts with its own empty /tmp.
    let mut other = sb.group(&TaskSpec::shell("")).unwrap();
    let (_, out) = task(&mut other, "cat /tmp/state 2>/dev/null || echo fresh", &[]).await;
    assert_eq!(out, "fresh\n");
    other.close().await;
    g.close().await;
}

/// Each task of a group starts as locked down as a lone task: no capability in any set, no
/// way to regain one, no_new_privs, the seccomp filter, no signal blocked or ignored — though
/// pid 1 locked the bounding and ambient sets and the dispositions once for all of them.
#[tokio::test]
async fn every_task_of_a_group_starts_locked_down() {
    let Some((sb, _dir)) = sandbox() else { return };
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    for _ in 0..3 {
        let (r, out) = task(
            &mut g,
            "trap '' INT; exec grep -E '^(Cap|NoNewPrivs|Seccomp:|Sig(Blk|Ign))' /proc/self/status",
            &[],
        )
        .await;
        assert!(r.success(), "{r:?}");
        for want in [
            "CapInh:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
            "SigBlk:\t0000000000000000",
        ] {
            assert!(out.contains(want), "{want} in {out}");
        }
        // A task's own `trap ''` (SIGINT ignored) is its own: gone in the next task.
        assert!(out.contains("SigIgn:\t0000000000000002"), "{out}");
    }
    g.close().await;
}

#[tokio::test]
async fn limits_hit_in_the_fifth_task_fail_only_that_task() {
    let Some((sb, _dir)) = sandbox() else { return };
    let mut spec = TaskSpec::shell("");
    spec.limits.memory_mib = 64;
    spec.limits.pids = 32;
    let hog = "python3 -c 'x = bytearray(300 << 20); print(len(x))'";
    let storm = "python3 -c 'import os, time\nfor i in range(100):\n  try:\n    pid = os.fork()\n  except OSError:\n    break\n  if pid == 0:\n    time.sleep(30)\n    os._exit(0)\nprint(i)'";
    for (what, cmd) in [("memory", hog), ("pids", storm), ("timeout", "sleep 30")] {
        let mut g = sb.group(&spec).unwrap();
        for i in 0..4 {
            let (r, out) = task(
                &mut g,
                &format!("echo {i}; cat /tmp/n 2>/dev/null; echo {i} >> /tmp/n"),
                &[],
            )
            .await;
            assert!(
                r.success() && !r.pids_limit_hit && !r.oom_killed,
                "{what}: {r:?}"
            );
            assert_eq!(out.lines().count(), i + 1, "{what}: {out}");
        }
        let (r, _) = task_with(&mut g, cmd, &[], |s| s.limits.timeout_ms = 1000).await;
        match what {
            "memory" => assert!(r.oom_killed && r.signal == Some(9), "{r:?}"),
            "pids" => assert!(r.pids_limit_hit && !r.oom_killed, "{r:?}"),
            _ => assert!(r.timed_out && r.killed(), "{r:?}"),
        }
        if what != "pids" {
            assert!(g.is_over(), "a killed task ends its container");
        }
        g.close().await;
    }
}

#[tokio::test]
async fn each_task_reports_its_own_cpu_and_memory() {
    let Some((sb, _dir)) = sandbox() else { return };
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    let (busy, _) = task(
        &mut g,
        // Busy until 0.4 s of its own user CPU time (not wall time: the test may share the
        // cores; not process time: touching 100 MiB may take as much system time).
        "python3 -c 'import os\nx = bytearray(100 << 20)\nwhile os.times()[0] < 0.4: pass'",
        &[],
    )
    .await;
    let (idle, _) = task(&mut g, "true", &[]).await;
    assert!(busy.cpu_user_ms >= 200, "{busy:?}");
    assert!(idle.cpu_user_ms + idle.cpu_sys_ms < 50, "{idle:?}");
    assert!(busy.memory_peak >= 100 << 20, "{busy:?}");
    assert!(idle.memory_peak < 50 << 20, "peak is per task: {idle:?}");
    g.close().await;
}

#[tokio::test]
async fn cancelling_or_closing_a_group_leaves_nothing() {
    let Some((sb, dir)) = sandbox() else { return };
    let mut helpers = Vec::new();
    let tag = format!("1000.{}", std::process::id() % 1000 + 9);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "x").unwrap();
    // Cancelled mid-task.
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    helpers.extend(g.helper_pid());
    let (r, _) = task(&mut g, "echo one > /tmp/a", &[(&input, "/manta/in")]).await;
    assert!(r.success());
    let mut spec = TaskSpec::shell(&format!("(sleep {tag} &); sleep {tag}"));
    spec.binds.push(Bind {
        host: input.to_string_lossy().into(),
        inside: "/manta/in".into(),
        writable: false,
    });
    let s = g.spawn(&spec, Input::Null).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(host_procs(&format!("sleep {tag}")).len(), 2);
    g.cancel();
    let r = g.wait().await.unwrap();
    drop(s);
    assert!(r.cancelled && g.is_over(), "{r:?}");
    g.close().await;
    assert!(host_procs(&format!("sleep {tag}")).is_empty());
    // Closed while idle, and dropped while a task runs.
    let g = sb.group(&TaskSpec::shell("")).unwrap();
    helpers.extend(g.helper_pid());
    g.close().await;
    let mut g = sb.group(&TaskSpec::shell("")).unwrap();
    let _s = g
        .spawn(&TaskSpec::shell(&format!("sleep {tag}")), Input::Null)
        .unwrap();
    let helper = g.helper_pid().unwrap();
    helpers.push(helper);
    drop(g);
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{helper}")).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(host_procs(&format!("sleep {tag}")).is_empty());
    // Cgroup leaves are named after their helper.
    let left: Vec<_> = cgroup::leaves()
        .into_iter()
        .filter(|l| {
            let name = l.file_name().unwrap().to_string_lossy().into_owned();
            helpers.iter().any(|h| name.starts_with(&format!("h{h}-")))
        })
        .collect();
    assert!(left.is_empty(), "no cgroup left: {left:?}");
    assert_eq!(mounts_under(dir.path()), 0, "no mount left on the host");
}
