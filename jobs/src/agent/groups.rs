//! Task groups on this node (SPEC §5): the containers that map tasks of one job phase reuse.
//!
//! A map task takes an idle container of its (account, job, phase) when there is one, else
//! starts one (running the phase's `init` before its own command: once per container). After
//! the task, its container goes back to the idle pool only if the task succeeded and nothing
//! stopped it; otherwise it is dropped. Idle containers are destroyed after [`MAX_IDLE`], when
//! their job is cancelled ([`Groups::drop_job`]), and when the agent stops (the pool drops
//! with it). Dropping a [`Pooled`] ends its container (no process, mount or cgroup remains)
//! and removes its directory.
//!
//! Each container has a directory of its own under `agent/g/`, bound at `/run/mobula`, holding
//! its tools socket `sock`: bound once, served for each task in turn with that task's scope.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mobula_sandbox::group::Group;

/// How long a container may wait idle for its group's next task.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(1);

/// Which tasks may share a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct GroupKey {
    pub account: String,
    pub job: String,
    pub phase: usize,
}

/// A container of a group, between or during its tasks.
#[derive(Debug)]
pub(crate) struct Pooled {
    pub group: Group,
    pub key: GroupKey,
    /// Bound at `/run/mobula` in the container.
    pub dir: PathBuf,
    /// This node's number for the container (the task log's `container`).
    pub id: u64,
    /// The tools socket `sock` in `dir`, bound once for the container's life (a socket bound
    /// and unlinked per task cost inode churn on the node's file system) and served for one
    /// task at a time, each with its own scope.
    pub listener: Option<tokio::net::UnixListener>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The idle containers of this node.
#[derive(Debug)]
pub(crate) struct Groups {
    idle: Mutex<HashMap<GroupKey, Vec<(Pooled, Instant)>>>,
    next: AtomicU64,
    /// `agent/g`.
    dir: PathBuf,
}

impl Groups {
    pub fn new(dir: PathBuf) -> Groups {
        Groups {
            idle: Mutex::default(),
            next: AtomicU64::new(1),
            dir,
        }
    }

    /// A fresh directory for a new container, and its number.
    pub fn new_dir(&self) -> std::io::Result<(PathBuf, u64)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let d = self.dir.join(id.to_string());
        std::fs::create_dir(&d)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        Ok((d, id))
    }

    /// An idle container of `key` (the most recently used), if any.
    pub fn take(&self, key: &GroupKey) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let p = list.pop().map(|(p, _)| p);
        if list.is_empty() {
            idle.remove(key);
        }
        p
    }

    /// Back to the pool after a successful task.
    pub fn put(&self, p: Pooled) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.entry(p.key.clone())
            .or_default()
            .push((p, Instant::now()));
    }

    /// Destroy containers idle longer than `max`; true while any container is idle.
    pub fn reap(&self, max: Duration) -> bool {
        let gone: Vec<Pooled> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut gone = Vec::new();
            idle.retain(|_, list| {
                let (old, keep): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|(_, t)| t.elapsed() >= max);
                gone.extend(old.into_iter().map(|(p, _)| p));
                *list = keep;
                !list.is_empty()
            });
            gone
        };
        drop(gone); // outside the lock: each drop removes a directory
        !self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Destroy the idle containers of `job` (it was cancelled or ended).
    pub fn drop_job(&self, job: &str) {
        let gone: Vec<_> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<GroupKey> = idle.keys().filter(|k| k.job == job).cloned().collect();
            keys.iter().filter_map(|k| idle.remove(k)).collect()
        };
        drop(gone);
    }

    /// Idle containers right now (for tests and the agent's status).
    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }
}
