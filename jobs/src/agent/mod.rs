//! The job agent of one storage node: runs the tasks the coordinator places here beside the
//! data (SPEC §4), map tasks in their phase's task group (a container reused by successive
//! tasks of one job phase, SPEC §5), reducers each in a fresh [`Sandbox`] container.
//!
//! Owns: the table of task runs by key (a run happens once per key, whoever asks; a finished
//! run's result is kept a while for a coordinator that restarts), the node's task log, and the
//! HTTP routes of [`crate::api`] served from the storage node's port — and the same answers as a
//! [`LocalAgent`] to a coordinator in the node's process (the node's
//! [`Extension::local`](mobula_storage_node::Extension::local)). Tasks are spawned into a
//! `JoinSet` owned by the [`Agent`]: when the node stops, its tasks (and their sandboxes) go.
//!
//! - `task.rs`: one task from request to result (input bound read-only from the node's volume,
//!   stdout and stderr streamed into local data, limits, classification of failures).
//! - `objects.rs`: storing what a task emits — first copy on this node, then replicated, then
//!   committed to the namespace as the job's account.
//! - `socket.rs`: the in-task tools' unix socket, one per task, acting only as the job's account.
//! - `groups.rs`: the idle containers of task groups, reaped after a second.

mod argv;
mod groups;
mod launch;
mod objects;
mod socket;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use mobula_http::{ApiError, Body, Code, Request};
use mobula_metadata::api::Data;
use mobula_storage_node::{Extension, Store};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::api::{Feed, Key, TaskRequest, TaskResult};
use crate::client::LocalAgent;
use futures::future::BoxFuture;
use mobula_sandbox::{Sandbox, SandboxConfig};

/// How long a finished run's result is kept for a coordinator asking again.
const KEEP_RESULTS: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_dir: PathBuf,
    pub node_id: String,
    /// This node's URL (peers fetch copies of outputs from it).
    pub url: String,
    pub metadata_url: String,
    /// The `mobula` binary: sandbox helper, and the in-task tools.
    pub exe: PathBuf,
    /// Tasks run at once (default: by cores and memory).
    pub slots: u32,
    /// The storage nodes running in this process (`mobula up`), whose copies of small outputs
    /// the agent writes straight to their stores when they share this node's journal.
    pub local: Option<mobula_storage_node::LocalNodes>,
}

impl AgentConfig {
    /// Slots by this machine's cores and memory: one per core, at most one per GiB.
    pub fn default_slots() -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(1, |kib| (kib >> 20).max(1) as u32);
        cores.min(mem_gib).max(1)
    }
}

/// A reducer's input as the agent hands it to the task's feeder.
#[derive(Debug)]
pub(crate) enum FeedMsg {
    /// An object's path, with its data when the coordinator sent it.
    Path(String, Option<Data>),
    End,
}

#[derive(Debug, Default)]
struct FeedState {
    next: u64,
    pending: BTreeMap<u64, (String, Option<Data>)>,
    end_at: Option<u64>,
    end_sent: bool,
}

/// One run of one task (by key).
#[derive(Debug)]
pub(crate) struct Entry {
    result: watch::Sender<Option<TaskResult>>,
    created: Instant,
    started: AtomicBool,
    finished_at: Mutex<Option<Instant>>,
    killed: AtomicBool,
    kill: Notify,
    feed: Mutex<FeedState>,
    feed_tx: mpsc::UnboundedSender<FeedMsg>,
    feed_rx: Mutex<Option<mpsc::UnboundedReceiver<FeedMsg>>>,
}

impl Entry {
    fn new() -> Entry {
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        Entry {
            result: watch::channel(None).0,
            created: Instant::now(),
            started: AtomicBool::new(false),
            finished_at: Mutex::new(None),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            feed: Mutex::new(FeedState::default()),
            feed_tx,
            feed_rx: Mutex::new(Some(feed_rx)),
        }
    }

    /// Take reducer inputs numbered `from..`, passing on those next in order.
    fn feed(&self, f: &Feed) {
        let mut s = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        for (i, p) in f.paths.iter().enumerate() {
            let n = f.from + i as u64;
            if n >= s.next {
                s.pending.insert(n, (p.clone(), f.known.get(p).cloned()));
            }
        }
        if f.end {
            s.end_at = Some(f.from + f.paths.len() as u64);
        }
        loop {
            let next = s.next;
            let Some((p, d)) = s.pending.remove(&next) else {
                break;
            };
            let _ = self.feed_tx.send(FeedMsg::Path(p, d));
            s.next += 1;
        }
        if s.end_at == Some(s.next) && !s.end_sent {
            s.end_sent = true;
            let _ = self.feed_tx.send(FeedMsg::End);
        }
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Resolves once the run is to be killed.
    pub(crate) async fn killed(&self) {
        loop {
            let n = self.kill.notified();
            if self.is_killed() {
                return;
            }
            n.await;
        }
    }

    pub(crate) fn take_feed(&self) -> Option<mpsc::UnboundedReceiver<FeedMsg>> {
        self.feed_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// What every task run shares.
pub(crate) struct Shared {
    pub cfg: AgentConfig,
    pub sandbox: Sandbox,
    pub objects: objects::Objects,
    pub log: Mutex<std::fs::File>,
    pub groups: groups::Groups,
    /// The node's slots: a map task holds one while its program runs. The coordinator places
    /// more tasks than slots on a node (`PLACED_PER_SLOT`), so the next one waits here, ready
    /// to start the moment a slot frees.
    pub slots: tokio::sync::Semaphore,
    /// This node's `mobula_tasks_running` (programs running) and `mobula_tasks_waiting` (map
    /// tasks placed here, their input bound, waiting for a slot).
    pub running: metrics::Gauge,
    pub waiting: metrics::Gauge,
}

/// The agent of one node.
pub struct Agent {
    shared: Arc<Shared>,
    runs: Mutex<HashMap<String, Arc<Entry>>>,
    swept: Mutex<Instant>,
    tasks: Mutex<JoinSet<()>>,
    /// The idle-container reaper runs (started with the first task).
    reaping: AtomicBool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Agent({})", self.shared.cfg.node_id)
    }
}

impl Agent {
    /// Start the agent (and its sandbox zygote) for the node in `cfg.node_dir`.
    pub fn new(cfg: AgentConfig) -> std::io::Result<Arc<Agent>> {
        let dir = cfg.node_dir.join("agent");
        for d in ["t", "g", "bin", "cache"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        // Fresh per-task and per-container directories and cached inputs only live as long as
        // their task or container.
        for d in ["t", "g", "cache"] {
            for e in std::fs::read_dir(dir.join(d))?.flatten() {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        for t in crate::tools::TOOLS {
            let link = dir.join("bin").join(t);
            if std::fs::read_link(&link).is_err() {
                std::os::unix::fs::symlink(crate::tools::TOOLS_EXE, &link)?;
            }
        }
        std::fs::write(dir.join("empty"), b"")?;
        let mut sc = SandboxConfig::under(&cfg.node_dir)?;
        sc.helper = cfg.exe.clone();
        let sandbox = Sandbox::new(sc)?;
        let store = Store::open(&cfg.node_dir)?.counted_as(&cfg.node_id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tasks.log"))?;
        let objects = objects::Objects::new(&cfg, store.clone());
        let slots = cfg.slots.max(1) as usize;
        let running = metrics::gauge!("mobula_tasks_running", "node" => cfg.node_id.clone());
        let waiting = metrics::gauge!("mobula_tasks_waiting", "node" => cfg.node_id.clone());
        // Exported from the start (0), so that a dashboard finds the series before a task waits.
        waiting.set(0.0);
        Ok(Arc::new(Agent {
            shared: Arc::new(Shared {
                cfg,
                sandbox,
                objects,
                log: Mutex::new(log),
                groups: groups::Groups::new(dir.join("g")),
                slots: tokio::sync::Semaphore::new(slots),
                running,
                waiting,
            }),
            runs: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
            tasks: Mutex::new(JoinSet::new()),
            reaping: AtomicBool::new(false),
        }))
    }

    /// The agent as the storage node's `/tasks/` handler.
    pub fn extension(self: &Arc<Agent>) -> Extension {
        let a = self.clone();
        Extension {
            slots: self.shared.cfg.slots,
            local: Some(Arc::new(self.clone() as Arc<dyn LocalAgent>)),
            handler: Arc::new(move |req| {
                let a = a.clone();
                Box::pin(async move {
                    match a.route(req).await {
                        Ok(r) => r,
                        Err(e) => e.into_response(),
                    }
                })
            }),
        }
    }

    fn entry(&self, key: &str) -> Arc<Entry> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(key.to_string())
            .or_insert_with(|| Arc::new(Entry::new()))
            .clone()
    }

    /// Forget finished results after [`KEEP_RESULTS`], and feeds or kills for a run that never
    /// came after the same while; at most once a minute (it walks every entry).
    fn sweep(&self) {
        {
            let mut last = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < Duration::from_secs(60) {
                return;
            }
            *last = Instant::now();
        }
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|_, e| {
            let f = e.finished_at.lock().unwrap_or_else(|p| p.into_inner());
            match *f {
                Some(t) => t.elapsed() < KEEP_RESULTS,
                None => e.started.load(Ordering::SeqCst) || e.created.elapsed() < KEEP_RESULTS,
            }
        });
    }

    async fn route(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        if req.method() != Method::POST {
            return Err(ApiError::new(Code::MethodNotAllowed, "use POST"));
        }
        let body = Limited::new(req.into_body(), 16 << 20)
            .collect()
            .await
            .map_err(|e| ApiError::new(Code::InvalidArgument, format!("reading body: {e}")))?
            .to_bytes();
        let bad = |e: serde_json::Error| ApiError::new(Code::InvalidArgument, e.to_string());
        match path.as_str() {
            "/tasks/run" => {
                let r: TaskRequest = serde_json::from_slice(&body).map_err(bad)?;
                let result = self.run_checked(r).await?;
                Ok(mobula_http::json(StatusCode::OK, &result))
            }
            "/tasks/feed" => {
                LocalAgent::feed(self, &serde_json::from_slice(&body).map_err(bad)?);
                Ok(mobula_http::status(StatusCode::NO_CONTENT))
            }
            "/tasks/kill" => {
                LocalAgent::kill(self, &serde_json::from_slice(&body).map_err(bad)?);
                Ok(mobula_http::status(StatusCode::NO_CONTENT))
            }
            _ => Err(ApiError::new(
                Code::ResourceNotFound,
                format!("no route {path}"),
            )),
        }
    }

    /// `POST /tasks/run`: run `r` (once per key) and wait for its result. The key names the
    /// task's directory: plain names only.
    async fn run_checked(&self, r: TaskRequest) -> Result<TaskResult, ApiError> {
        let plain = |s: &str| mobula_metadata::api::plain_name(s, 200);
        if !plain(&r.key) || !plain(&r.job) || !plain(&r.account) {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "bad task key, job or account",
            ));
        }
        Ok(self.run(r).await)
    }

    /// Idle task-group containers on this node.
    pub fn idle_containers(&self) -> usize {
        self.shared.groups.idle_count()
    }

    /// Run `r` (once per key) and wait for its result.
    async fn run(&self, r: TaskRequest) -> TaskResult {
        self.sweep();
        let e = self.entry(&r.key);
        let mut rx = e.result.subscribe();
        if !e.started.swap(true, Ordering::SeqCst) {
            let (sh, e2) = (self.shared.clone(), e.clone());
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            while tasks.try_join_next().is_some() {}
            if !self.reaping.swap(true, Ordering::SeqCst) {
                let sh = self.shared.clone();
                tasks.spawn(async move {
                    loop {
                        tokio::time::sleep(groups::MAX_IDLE / 4).await;
                        sh.groups.reap(groups::MAX_IDLE);
                    }
                });
            }
            tasks.spawn(async move {
                let node = sh.cfg.node_id.clone();
                let result = task::run(&sh, &e2, r).await;
                let outcome = if result.failure.is_some() { "failed" } else { "done" };
                metrics::counter!("mobula_tasks_finished_total", "node" => node, "result" => outcome)
                    .increment(1);
                *e2.finished_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                e2.result.send_replace(Some(result));
            });
        }
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return task::internal(&self.shared.cfg.node_id, "the agent stopped".into());
            }
        }
    }
}

impl LocalAgent for Agent {
    fn run(&self, r: TaskRequest) -> BoxFuture<'_, Result<TaskResult, ApiError>> {
        Box::pin(self.run_checked(r))
    }

    /// A reducer's next inputs.
    fn feed(&self, f: &Feed) {
        self.entry(&f.key).feed(f);
    }

    /// Stop a task. A kill is a cancel or a retry elsewhere: the job's idle containers go too.
    fn kill(&self, k: &Key) {
        if let Some(job) = k.key.split('.').next() {
            self.shared.groups.drop_job(job);
        }
        let e = self.entry(&k.key);
        e.killed.store(true, Ordering::SeqCst);
        e.kill.notify_waiters();
    }
}
