//! Per-task cgroups: one leaf per task under `mobula-tasks/`, limits written before the task's
//! first process joins, statistics read after it ends, the leaf killed and removed at teardown.
//!
//! Two layouts: cgroup v2 (unified, `memory.max`, `pids.max`, `cpu.max`, `cgroup.kill`) when
//! `/sys/fs/cgroup` is cgroup2, else v1 (one directory per controller: memory, pids, cpu). Hybrid
//! hosts (v1 controllers plus an empty unified tree) count as v1. Under v1 the leaves go below the
//! caller's own cgroup in each hierarchy, so the node's own limits still bound its tasks.
//!
//! Leaf names are `h<helper pid>-<task>`: [`sweep`] removes leaves whose helper is gone (after a
//! crash), killing anything still inside.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::spec::Limits;

const TOP: &str = "mobula-tasks";
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The cgroup directories of one task.
#[derive(Debug)]
pub struct Cgroups {
    v2: bool,
    /// v2: one directory; v1: memory, pids, cpu (in that order; missing controllers skipped).
    /// After [`Cgroups::pin`], `/proc/self/fd/N` paths into `pinned`.
    dirs: Vec<(String, PathBuf)>,
    /// Open leaf and parent directories (leaf paths for files, parent + name for removal).
    pinned: Vec<(fs::File, fs::File)>,
    name: String,
    /// A group's counter files, opened at its first task and re-read from offset 0 at each
    /// (by leaf index and file name): opening them again through the pinned `/proc/self/fd`
    /// paths twice per task cost ~5% of a tiny task's CPU in the sandbox's processes.
    counters: std::sync::Mutex<HashMap<(usize, &'static str), fs::File>>,
}

/// Peak usage and limit events read at the end.
#[derive(Debug, Default)]
pub struct Stats {
    pub memory_peak: u64,
    pub oom_killed: bool,
    pub pids_limit_hit: bool,
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

type Parents = (bool, Vec<(String, PathBuf)>);

/// The parent directories leaves go under: (v2?, [(controller, dir)]). Found once per process
/// (the zygote finds them before forking helpers).
fn parents() -> io::Result<Parents> {
    static PARENTS: std::sync::OnceLock<Result<Parents, String>> = std::sync::OnceLock::new();
    PARENTS
        .get_or_init(|| find_parents().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

/// Look the parents up now (before forking).
pub fn warm() {
    let _ = parents();
}

fn find_parents() -> io::Result<Parents> {
    let root = Path::new("/sys/fs/cgroup");
    let own = fs::read_to_string("/proc/self/cgroup")?;
    if is_cgroup2(root) {
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let mine = root.join(path.trim_start_matches('/'));
        // A cgroup holding processes cannot delegate controllers (except the root): try below
        // our own cgroup, fall back to the root.
        let base = if enable_v2(&mine).is_ok() {
            mine
        } else {
            enable_v2(root)?;
            root.to_path_buf()
        };
        return Ok((true, vec![("unified".into(), base.join(TOP))]));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for c in V1_CONTROLLERS {
        let mount = mounts.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            if post.next()? != "cgroup" {
                return None;
            }
            let opts = post.nth(1)?;
            opts.split(',')
                .any(|o| o == c)
                .then(|| pre.split(' ').nth(4).map(PathBuf::from))?
        });
        let Some(mount) = mount else { continue };
        let path = own
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
                ctrls.split(',').any(|x| x == c).then_some(path)
            })
            .unwrap_or("/");
        out.push((
            c.to_string(),
            mount.join(path.trim_start_matches('/')).join(TOP),
        ));
    }
    if out.is_empty() {
        return Err(io::Error::other("no cgroup controllers found"));
    }
    Ok((false, out))
}

fn enable_v2(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu")
}

impl Cgroups {
    /// Create the leaves for task `name` and write its limits.
    pub fn create(name: &str, limits: &Limits) -> io::Result<Cgroups> {
        let (v2, parents) = parents()?;
        let mut dirs = Vec::new();
        for (c, parent) in parents {
            // No CPU cap asked: the cpu controller adds nothing (CFS shares per process).
            if c == "cpu" && limits.cpu <= 0.0 {
                continue;
            }
            match fs::create_dir(&parent) {
                Ok(()) => {
                    if v2 {
                        enable_v2(&parent)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let dir = parent.join(name);
            fs::create_dir(&dir)?;
            dirs.push((c, dir));
        }
        let cg = Cgroups {
            v2,
            dirs,
            pinned: Vec::new(),
            name: name.to_string(),
            counters: Default::default(),
        };
        cg.write_limits(limits)?;
        Ok(cg)
    }

    fn write_limits(&self, l: &Limits) -> io::Result<()> {
        let mem = (l.memory_mib << 20).to_string();
        let quota = (l.cpu > 0.0).then(|| ((l.cpu * 100_000.0) as u64).max(1000));
        for (c, dir) in &self.dirs {
            let w = |file: &str, v: &str| {
                fs::write(dir.join(file), v)
                    .map_err(|e| io::Error::new(e.kind(), format!("{c}/{file}: {e}")))
            };
            if self.v2 {
                w("memory.max", &mem)?;
                let _ = w("memory.swap.max", "0");
                w("memory.oom.group", "1")?;
                w("pids.max", &l.pids.to_string())?;
                if let Some(q) = quota {
                    w("cpu.max", &format!("{q} 100000"))?;
                }
                continue;
            }
            match c.as_str() {
                "memory" => {
                    w("memory.limit_in_bytes", &mem)?;
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        w("memory.memsw.limit_in_bytes", &mem)?;
                    }
                }
                "pids" => w("pids.max", &l.pids.to_string())?,
                "cpu" => {
                    if let Some(q) = quota {
                        w("cpu.cfs_period_us", "100000")?;
                        w("cpu.cfs_quota_us", &q.to_string())?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Keep working after the host's paths are gone (the helper pivots away from them): open
    /// every leaf and its parent, and use `/proc/self/fd/N` paths from now on.
    pub fn pin(&mut self) -> io::Result<()> {
        for (_, dir) in &mut self.dirs {
            let leaf = fs::File::open(&*dir)?;
            let parent = fs::File::open(dir.parent().unwrap_or(Path::new("/")))?;
            *dir = PathBuf::from(format!("/proc/self/fd/{}", leaf.as_raw_fd()));
            self.pinned.push((leaf, parent));
        }
        Ok(())
    }

    /// Put process `pid` (and so everything it will start) into every leaf.
    pub fn add(&self, pid: i32) -> io::Result<()> {
        for (_, dir) in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for (c, dir) in &self.dirs {
            let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
            let field = |text: &str, key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if self.v2 {
                s.memory_peak = read("memory.peak").trim().parse().unwrap_or(0);
                s.oom_killed = field(&read("memory.events"), "oom_kill ") > 0;
                s.pids_limit_hit = field(&read("pids.events"), "max ") > 0;
            } else if c == "memory" {
                s.memory_peak = read("memory.max_usage_in_bytes")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                s.oom_killed = field(&read("memory.oom_control"), "oom_kill ") > 0;
            } else if c == "pids" {
                s.pids_limit_hit = field(&read("pids.events"), "max ") > 0;
            }
        }
        s
    }

    /// Where the counters stand before one task of a group: [`Cgroups::stats_since`] then
    /// tells that task's limit events and peak memory apart from its predecessors'. The peak is
    /// reset: v1's `memory.max_usage_in_bytes` by writing 0; v2's `memory.peak` through a
    /// descriptor kept in the mark (Linux 6.12+; older kernels report the group's peak so far).
    pub fn mark(&self) -> Mark {
        let mut m = Mark::default();
        for (i, (c, dir)) in self.dirs.iter().enumerate() {
            if self.v2 || c == "memory" {
                m.oom_kills = field(
                    &self.counter(i, dir, OOM_EVENTS[self.v2 as usize]),
                    "oom_kill ",
                );
            }
            if self.v2 || c == "pids" {
                m.pids_max = field(&self.counter(i, dir, "pids.events"), "max ");
            }
            if self.v2 {
                // A write resets the peak seen through this descriptor, kept for the group.
                m.peak_reset = self.with_counter(i, dir, "memory.peak", true, |f| {
                    use std::os::unix::fs::FileExt;
                    f.write_at(b"reset", 0).is_ok()
                }) == Some(true);
            } else if c == "memory" {
                let _ = fs::write(dir.join("memory.max_usage_in_bytes"), "0");
            }
        }
        m
    }

    /// The statistics of what ran since `m`.
    pub fn stats_since(&self, m: &Mark) -> Stats {
        let mut s = Stats::default();
        for (i, (c, dir)) in self.dirs.iter().enumerate() {
            if self.v2 || c == "memory" {
                let events = self.counter(i, dir, OOM_EVENTS[self.v2 as usize]);
                s.oom_killed = field(&events, "oom_kill ") > m.oom_kills;
                // v1: reset by the mark; v2: through the descriptor the mark reset, else the
                // group's whole peak.
                let peak = if m.peak_reset {
                    self.counter(i, dir, "memory.peak")
                } else {
                    fs::read_to_string(dir.join(PEAK[self.v2 as usize])).unwrap_or_default()
                };
                s.memory_peak = peak.trim().parse().unwrap_or(0);
            }
            if self.v2 || c == "pids" {
                s.pids_limit_hit = field(&self.counter(i, dir, "pids.events"), "max ") > m.pids_max;
            }
        }
        s
    }

    /// `f` on leaf `i`'s `file`, kept open ([`Cgroups::counters`]; for writing too when
    /// `write`, at its first use); `None` if it cannot open.
    fn with_counter<T>(
        &self,
        i: usize,
        dir: &Path,
        file: &'static str,
        write: bool,
        f: impl FnOnce(&fs::File) -> T,
    ) -> Option<T> {
        let mut open = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let file = match open.entry((i, file)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let opened = fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(dir.join(file));
                v.insert(opened.ok()?)
            }
        };
        Some(f(file))
    }

    /// Leaf `i`'s `file` as it reads now (empty if it cannot be read).
    fn counter(&self, i: usize, dir: &Path, file: &'static str) -> String {
        self.with_counter(i, dir, file, false, |f| {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 4096];
            let n = f.read_at(&mut buf, 0).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .unwrap_or_default()
    }

    /// SIGKILL everything inside, wait (≤ 5 s) until the leaves are empty, remove them.
    pub fn destroy(&self) -> io::Result<()> {
        for (i, (_, dir)) in self.dirs.iter().enumerate() {
            let removable = match self.pinned.get(i) {
                Some((_, parent)) => {
                    PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(&self.name)
                }
                None => dir.clone(),
            };
            kill_and_remove(dir, &removable, self.v2)?;
        }
        Ok(())
    }
}

/// The file counting OOM kills: v1, v2.
const OOM_EVENTS: [&str; 2] = ["memory.oom_control", "memory.events"];
/// The file of the peak memory: v1, v2.
const PEAK: [&str; 2] = ["memory.max_usage_in_bytes", "memory.peak"];

/// A group task's starting point (see [`Cgroups::mark`]).
#[derive(Debug, Default)]
pub struct Mark {
    oom_kills: u64,
    pids_max: u64,
    /// v2: the group's `memory.peak` descriptor was reset (Linux 6.12+).
    peak_reset: bool,
}

/// Counter `key` of a flat-keyed cgroup file's `text`.
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kill what is in the leaf at `dir` and remove it (`path`: the same leaf, as a removable path).
fn kill_and_remove(dir: &Path, path: &Path, v2: bool) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if v2 {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        }
        for pid in procs(dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Turn on `favordynmods` on the cgroup2 mount (v2 hosts, or the unified tree of hybrid ones).
/// Moving a process into a cgroup takes a global lock whose fast path is otherwise re-armed by
/// an RCU grace period: 10–30 ms per `cgroup.procs` write on this machine kind when spawns are
/// a few hundred ms apart. The flag keeps the fast path armed (fork and exit pay a little more),
/// for every hierarchy, v1 included. Returns whether it changed anything.
pub fn favor_dynmods() -> io::Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    for l in mounts.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup2 ") {
            continue;
        }
        let Some(target) = pre.split(' ').nth(4) else {
            continue;
        };
        if post
            .split(' ')
            .nth(2)
            .is_some_and(|o| o.split(',').any(|x| x == "favordynmods"))
        {
            return Ok(false);
        }
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT,
            Some("favordynmods"),
        )
        .map_err(|e| io::Error::other(format!("remount {target} favordynmods: {e}")))?;
        return Ok(true);
    }
    Ok(false)
}

/// True when `pid` is a live sandbox helper (a fork of a zygote, same command line).
fn helper_alive(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .any(|a| a == super::sys::ZYGOTE_ARG.as_bytes())
        })
        .unwrap_or(false)
}

/// Remove leaves whose helper process is gone, killing whatever is left in them. Safe to run
/// while other helpers work: live helpers' leaves are left alone. Returns how many were removed.
pub fn sweep() -> io::Result<usize> {
    let (v2, parents) = parents()?;
    let mut n = 0;
    for (_, parent) in parents {
        let Ok(rd) = fs::read_dir(&parent) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix('h')
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse().ok())
            else {
                continue;
            };
            if e.path().is_dir() && !helper_alive(pid) {
                kill_and_remove(&e.path(), &e.path(), v2)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Leaves that exist now (for leak checks).
pub fn leaves() -> Vec<PathBuf> {
    let Ok((_, parents)) = parents() else {
        return Vec::new();
    };
    parents
        .into_iter()
        .flat_map(|(_, p)| fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}
