//! The floor: what the job contract costs per map task on this machine at the very least,
//! measured with none of Mobula's own structure — each piece the plainest way the kernel
//! offers, so that the word-count goal can be set against what is possible.
//!
//! Every figure is CPU (all cores, from `/proc/stat`, so the kernel's deferred work counts too)
//! per operation, two at a time on this 2-core machine:
//! - `exec`: fork/exec of `true` — what a local pipeline pays per input besides its work;
//! - `container`: the same in the plainest container SPEC §5 allows: `clone` into new user,
//!   mount, pid, ipc and uts namespaces (the empty network namespace is pooled, so not counted),
//!   uid/gid maps, a tmpfs root with `/usr` bound read-only, a tmpfs `/tmp`, the host's `/dev`,
//!   a fresh `/proc`, `pivot_root`, the old root detached, `exec`;
//! - `+ seccomp + cgroups`: that, with Mobula's seccomp program loaded and memory + pids leaves
//!   created, joined and removed (SPEC §4 limits);
//! - `task in a live container (task group)`: SPEC §5's task groups at their least: one live
//!   container per worker (built once, as above, with cgroups), pid 1 running task after task:
//!   a fresh read-only tmpfs `/manta` with the input bound in, fork, seccomp, exec `true`, every
//!   leftover process killed and reaped, `/manta` detached;
//! - `2 durable copies`: a 9-byte output written, fsync'd, renamed and its directory fsync'd,
//!   in two directories (one per copy; here on the same disk) — durable on any file system;
//! - `2 durable copies, linked then one commit`: both copies written and renamed into place,
//!   then each fsync'd — the first fsync's journal commit carries both names and both inodes,
//!   the second finds it done (as a node writes a task's small output and its peer's copy on a
//!   journaled ext4). Durable only on a journaled ext4 or btrfs: measured there only;
//! - `SQLite commit`: one row inserted in WAL mode with `synchronous=FULL` (the metadata's
//!   settings); `…, 2 results each`: two rows per transaction, per row (two slots' results
//!   logged together, as the coordinator's batches do at best with two cores);
//! - `HTTP round trip`: one small POST and its answer over loopback TCP, kept-alive, between a
//!   reqwest client and `mobula_http::serve` (how Mobula's parts talk);
//! - `wc -w of 1 MiB`: the word count's own work per input (the jobs bench's text), fork/exec
//!   included.
//!
//! `cargo bench --bench floor` (root). Env: N (operations per line, default 400), DIR (where the
//! files go; default the temp dir — point it at the volume's file system), ONLY (run the lines
//! whose name contains it).

#![allow(unsafe_code)]

#[path = "common/cpu.rs"]
mod cpu;

#[path = "common/words.rs"]
mod words;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{clone, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

const WORKERS: usize = 2;

/// CPU milliseconds per operation of `run` (which does `n` of them), deferred kernel work
/// included (a settling pause after the run is counted).
fn cpu_ms(n: usize, run: impl FnOnce()) -> f64 {
    let b0 = cpu::busy();
    run();
    std::thread::sleep(Duration::from_millis(300));
    (cpu::busy() - b0) * 1000.0 / n as f64
}

/// `n` calls of `op` spread over `WORKERS` forked, single-threaded processes.
fn in_processes(n: usize, op: &dyn Fn(usize)) {
    let mut kids = Vec::new();
    for w in 0..WORKERS {
        // SAFETY: the bench is single-threaded here (no runtime yet); the child only runs `op`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                for i in 0..n / WORKERS {
                    op(w * 1_000_000 + i);
                }
                // SAFETY: leave without running the parent's destructors.
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => kids.push(child),
        }
    }
    for k in kids {
        assert_eq!(waitpid(k, None).expect("wait"), WaitStatus::Exited(k, 0));
    }
}

fn exec_true() {
    let ok = std::process::Command::new("/usr/bin/true")
        .status()
        .expect("true");
    assert!(ok.success());
}

/// Inside the new namespaces: build the root, pivot, exec `true` — or, for a task group,
/// run `tasks` tasks one after another in the live container.
fn container_child(root: &Path, go: &OwnedFd, seccomp: bool, tasks: usize) -> isize {
    let mut b = [0u8; 1];
    if nix::unistd::read(go.as_raw_fd(), &mut b) != Ok(1) {
        return 10;
    }
    let step = || -> nix::Result<()> {
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())?;
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
        mount(
            Some("t"),
            root,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=8m"),
        )?;
        for d in ["usr", "tmp", "dev", "proc", "old", "manta"] {
            nix::unistd::mkdir(
                &root.join(d),
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            )?;
        }
        for l in ["bin", "lib", "lib64"] {
            let _ = std::os::unix::fs::symlink(format!("usr/{l}"), root.join(l));
        }
        let usr = root.join("usr");
        mount(
            Some("/usr"),
            &usr,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(none, &usr, none, ro, none)?;
        let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(
            Some("t"),
            &root.join("tmp"),
            Some("tmpfs"),
            nosuid,
            Some("size=8m"),
        )?;
        mount(
            Some("/dev"),
            &root.join("dev"),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )?;
        mount(Some("proc"), &root.join("proc"), Some("proc"), nosuid, none)?;
        nix::unistd::pivot_root(root, &root.join("old"))?;
        nix::unistd::chdir("/")?;
        umount2("/old", MntFlags::MNT_DETACH)
    };
    if step().is_err() {
        return 11;
    }
    if tasks > 0 {
        return group_tasks(tasks);
    }
    if seccomp {
        // Built by the parent before the clone (cached), so this only loads it.
        let Ok(p) = mobula_sandbox::seccomp::program() else {
            return 12;
        };
        let _ = nix::sys::prctl::set_no_new_privs();
        if mobula_sandbox::seccomp::install(p).is_err() {
            return 12;
        }
    }
    let t = CString::new("/usr/bin/true").unwrap_or_default();
    let _ = nix::unistd::execv(&t, &[&t]);
    13
}

/// pid 1 of a live container serving `n` tasks, each the least SPEC §5 asks between tasks: a
/// fresh read-only `/manta` (tmpfs) with the input bound in, the task forked and exec'd (with
/// the seccomp program), every leftover process killed and reaped, `/manta` detached.
fn group_tasks(n: usize) -> isize {
    let none: Option<&str> = None;
    let t = CString::new("/usr/bin/true").unwrap_or_default();
    let Ok(prog) = mobula_sandbox::seccomp::program() else {
        return 12;
    };
    for _ in 0..n {
        let mount_input = || -> nix::Result<()> {
            mount(
                Some("m"),
                "/manta",
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=64k"),
            )?;
            fs::write("/manta/in", b"").map_err(|_| nix::Error::EIO)?;
            mount(
                Some("/usr/bin/true"),
                "/manta/in",
                none,
                MsFlags::MS_BIND,
                none,
            )?;
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(none, "/manta", none, ro, none)
        };
        if mount_input().is_err() {
            return 14;
        }
        // SAFETY: pid 1 is single-threaded; the child only loads the filter and execs.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let _ = nix::sys::prctl::set_no_new_privs();
                if mobula_sandbox::seccomp::install(prog).is_ok() {
                    let _ = nix::unistd::execv(&t, &[&t]);
                }
                // SAFETY: leave the forked child at once.
                unsafe { nix::libc::_exit(13) }
            }
            Ok(ForkResult::Parent { child }) => {
                if waitpid(child, None) != Ok(WaitStatus::Exited(child, 0)) {
                    return 15;
                }
            }
            Err(_) => return 16,
        }
        // SAFETY: signals every other process of this pid namespace (none are left here).
        unsafe { nix::libc::kill(-1, nix::libc::SIGKILL) };
        while waitpid(None, None).is_ok() {}
        if umount2("/manta", MntFlags::MNT_DETACH).is_err() {
            return 17;
        }
    }
    0
}

fn container(dir: &Path, i: usize, full: bool) {
    container_with(dir, i, full, 0)
}

/// A live container per worker serving `tasks` tasks (see [`group_tasks`]).
fn task_group(dir: &Path, i: usize, tasks: usize) {
    container_with(dir, i, true, tasks)
}

fn container_with(dir: &Path, i: usize, full: bool, tasks: usize) {
    let root = dir.join(format!("root{}", i / 1_000_000));
    let _ = fs::create_dir(&root);
    if full {
        mobula_sandbox::seccomp::program().expect("seccomp");
    }
    let cg = full.then(|| {
        let limits = mobula_sandbox::Limits::default();
        mobula_sandbox::cgroup::Cgroups::create(&format!("floor-{i}"), &limits).expect("cgroups")
    });
    let (go_r, go_w) = pipe().expect("pipe");
    let mut stack = vec![0u8; 256 << 10];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    let cb = Box::new(|| container_child(&root, &go_r, full, tasks));
    // SAFETY: this worker process is single-threaded; the child runs `container_child` only.
    let pid = unsafe { clone(cb, &mut stack, flags, Some(nix::libc::SIGCHLD)) }.expect("clone");
    let map = format!("0 {} 65536\n", mobula_sandbox::DEFAULT_ID_BASE);
    fs::write(format!("/proc/{pid}/setgroups"), "deny").expect("setgroups");
    fs::write(format!("/proc/{pid}/uid_map"), &map).expect("uid_map");
    fs::write(format!("/proc/{pid}/gid_map"), &map).expect("gid_map");
    if let Some(cg) = &cg {
        cg.add(pid.as_raw()).expect("join cgroups");
    }
    nix::unistd::write(&go_w, b"g").expect("go");
    assert_eq!(
        waitpid(pid, None).expect("wait"),
        WaitStatus::Exited(pid, 0)
    );
    if let Some(cg) = cg {
        cg.destroy().expect("remove cgroups");
    }
}

fn durable_copies(dir: &Path, i: usize) {
    for copy in ["a", "b"] {
        let d = dir.join(copy);
        let (tmp, fin) = (d.join(format!("{i}.tmp")), d.join(format!("{i}")));
        let mut f = fs::File::create(&tmp).expect("create");
        f.write_all(b"12345678\n").expect("write");
        f.sync_all().expect("fsync");
        fs::rename(&tmp, &fin).expect("rename");
        fs::File::open(&d)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
    }
}

/// Both copies written and renamed into place, then each fsync'd: one journal commit.
fn durable_copies_linked(dir: &Path, i: usize) {
    let files: Vec<fs::File> = ["a", "b"]
        .into_iter()
        .map(|copy| {
            let d = dir.join(copy);
            let (tmp, fin) = (d.join(format!("l{i}.tmp")), d.join(format!("l{i}")));
            let mut f = fs::File::create(&tmp).expect("create");
            f.write_all(b"12345678\n").expect("write");
            fs::rename(&tmp, &fin).expect("rename");
            f
        })
        .collect();
    for f in files {
        f.sync_all().expect("fsync");
    }
}

/// Whether `dir`'s file system makes a new name durable with its inode's fsync: btrfs (its
/// log tree) or an ext4 with a journal (where a storage node links first, too).
fn names_ride_with_fsync(dir: &Path) -> bool {
    let btrfs = nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC);
    btrfs || mobula_storage_node::volume::plain::journaled_ext4(dir)
}

thread_local! {
    /// The worker process's database (opened at its first commit).
    static DB: std::cell::RefCell<Option<rusqlite::Connection>> = const { std::cell::RefCell::new(None) };
}

/// `rows` (row ids) inserted in one transaction into the worker process's database, made on
/// its first use in the metadata's settings (WAL, `synchronous=FULL`).
fn sqlite_insert(dir: &Path, rows: &[usize]) {
    DB.with(|db| {
        let mut db = db.borrow_mut();
        let c = db.get_or_insert_with(|| {
            let name = format!("db{}-{}.sqlite", rows[0] / 1_000_000, rows.len());
            let c = rusqlite::Connection::open(dir.join(name)).expect("open");
            c.pragma_update(None, "journal_mode", "WAL").expect("wal");
            c.pragma_update(None, "synchronous", "FULL").expect("sync");
            c.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
                .expect("table");
            c
        });
        let t = c.transaction().expect("begin");
        for &k in rows {
            t.execute(
                "INSERT INTO t VALUES (?1, 'an output of a task')",
                [k as i64],
            )
            .expect("insert");
        }
        t.commit().expect("commit");
    });
}

fn sqlite_commit(dir: &Path, i: usize) {
    sqlite_insert(dir, &[i]);
}

/// Two rows per transaction: the commit's share of each of two results logged together.
fn sqlite_commit_pair(dir: &Path, i: usize) {
    if i.is_multiple_of(2) {
        sqlite_insert(dir, &[i, i + 1]);
    }
}

fn http_round_trips(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/r", l.local_addr().expect("addr"));
        let server = tokio::spawn(mobula_http::serve(
            l,
            |_req| async { mobula_http::json(reqwest::StatusCode::OK, &"ok") },
            std::future::pending(),
            Duration::ZERO,
        ));
        let client = reqwest::Client::new();
        let loops = (0..WORKERS).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..n / WORKERS {
                    let r = client
                        .post(&url)
                        .body("{\"task\":1}")
                        .send()
                        .await
                        .expect("post");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body");
                }
            })
        });
        for l in loops.collect::<Vec<_>>() {
            l.await.expect("loop");
        }
        server.abort();
    });
}

fn wc_one(file: &Path) {
    let out = std::process::Command::new("wc")
        .arg("-w")
        .arg(file)
        .output()
        .expect("wc");
    assert!(out.status.success());
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let base = std::env::var_os("DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let d = dir.path();
    for s in ["a", "b"] {
        fs::create_dir(d.join(s)).expect("mkdir");
    }
    let text = d.join("words.txt");
    fs::write(&text, words::text(0, 1 << 20)).expect("text");

    let privileged = nix::unistd::geteuid().is_root();
    let linked = names_ride_with_fsync(d);
    if !linked {
        println!("{}: no journal or log that carries a new name with its inode's fsync; the linked copies line is skipped", d.display());
    }
    if !privileged {
        println!("not root: the container lines are skipped");
    }
    let only = std::env::var("ONLY").unwrap_or_default();
    type Line<'a> = (&'static str, bool, Box<dyn Fn() -> f64 + 'a>);
    let lines: Vec<Line> = vec![
        (
            "exec",
            true,
            Box::new(|| cpu_ms(n, || in_processes(n, &|_| exec_true()))),
        ),
        (
            "container",
            privileged,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| container(d, i, false)))),
        ),
        (
            "container + seccomp + cgroups",
            privileged,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| container(d, i, true)))),
        ),
        (
            "task in a live container (task group)",
            privileged,
            Box::new(|| {
                cpu_ms(n, || {
                    in_processes(WORKERS, &|i| task_group(d, i, n / WORKERS));
                })
            }),
        ),
        (
            "2 durable copies",
            true,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| durable_copies(d, i)))),
        ),
        (
            "2 durable copies, linked then one commit",
            linked,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| durable_copies_linked(d, i)))),
        ),
        (
            "SQLite commit",
            true,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| sqlite_commit(d, i)))),
        ),
        (
            "SQLite commit, 2 results each",
            true,
            Box::new(|| cpu_ms(n, || in_processes(n, &|i| sqlite_commit_pair(d, i)))),
        ),
        (
            "wc -w of 1 MiB",
            true,
            Box::new(|| cpu_ms(n, || in_processes(n, &|_| wc_one(&text)))),
        ),
        // Last: the runtime's threads start here, and everything above forks from a
        // single-threaded process.
        (
            "HTTP round trip",
            true,
            Box::new(|| cpu_ms(n, || http_round_trips(n))),
        ),
    ];
    let rows: Vec<(&str, f64)> = lines
        .into_iter()
        .filter(|(name, can, _)| *can && name.contains(only.as_str()))
        .map(|(name, _, run)| (name, run()))
        .collect();

    println!("CPU per operation, {n} each, {WORKERS} at a time:");
    println!("| operation | CPU |\n|---|---|");
    for (what, ms) in &rows {
        println!("| {what} | {ms:.2} ms |");
    }
    let get = |k: &str| rows.iter().find(|r| r.0 == k).map(|r| r.1);
    // The least of each step that the file system allows.
    let least = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let dur = least(
        get("2 durable copies"),
        get("2 durable copies, linked then one commit"),
    );
    let sq = least(get("SQLite commit"), get("SQLite commit, 2 results each"));
    if let (Some(exec), Some(full), Some(dur), Some(sq), Some(http), Some(wc)) = (
        get("exec"),
        get("container + seccomp + cgroups"),
        dur,
        sq,
        get("HTTP round trip"),
        get("wc -w of 1 MiB"),
    ) {
        let floor = (full - exec) + dur + sq + 3.0 * http;
        if let Some(g) = get("task in a live container (task group)") {
            let gfloor = (g - exec).max(0.0) + dur + sq + 3.0 * http;
            println!(
                "task-group floor per map task over a plain exec: task in a live container {:.2} \
                 + copies {dur:.2} + commit {sq:.2} + 3 messages {:.2} = {gfloor:.2} ms; so at \
                 best {:.2}x the local pipeline",
                g - exec,
                3.0 * http,
                (wc + gfloor) / wc
            );
        }
        println!(
            "floor per map task over a plain exec: container {:.2} + copies {dur:.2} + commit \
             {sq:.2} + 3 messages {:.2} = {floor:.2} ms; word count over 1 MiB inputs: \
             {wc:.2} ms per input locally, so at best {:.2}x the local pipeline (goal 1.3x \
             leaves {:.2} ms)",
            full - exec,
            3.0 * http,
            (wc + floor) / wc,
            0.3 * wc
        );
    }
}
