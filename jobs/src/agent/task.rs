//! One task from request to result. The map input's data file — this node's own copy — is
//! bound read-only at `/manta/<path>` and opened as stdin; a reducer's stdin is a pipe the
//! feeder fills with its inputs in order. Assets are bound at `/assets/<path>`, the tools'
//! socket directory and the tools themselves under `/run/mobula` and `/opt/mobula`. Stdout
//! and stderr stream into local data files as the task writes them (a file is made at a
//! stream's first byte). When the task succeeds, stdout's data is made durable on two nodes
//! and returned as an object for the coordinator to create with the logged result (unless it
//! was empty and the task emitted through the tools); when it fails, stderr becomes an
//! object. Failures are classified for the scheduler: internal (retried elsewhere) or the
//! user's (`UserTaskError`, `TaskKilledError`, `TaskInitError`, never retried).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use futures::FutureExt;
use mobula_metadata::api::Data;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::argv;
use super::launch::launch;
use super::objects::{output, Feed, LocalFile, Objects, OutputFile};
use super::{Entry, FeedMsg, Shared};
use crate::api::{TaskLog, TaskRequest, TaskResult};
use crate::schedule::{Failure, Output, TaskInput};
use crate::tools::{SOCKET, TOOLS_BIN};
use mobula_sandbox::{spec::DEFAULT_PATH, Bind, Input, Report, TaskSpec};

pub(crate) fn failed(
    node: &str,
    internal: bool,
    code: &str,
    message: String,
    stderr: Option<String>,
) -> TaskResult {
    TaskResult {
        node: node.to_string(),
        outputs: Vec::new(),
        objects: Vec::new(),
        failure: Some(Failure {
            internal,
            code: code.into(),
            message,
            stderr,
        }),
    }
}

fn cancelled_result(node: &str) -> TaskResult {
    failed(
        node,
        false,
        "JobCancelledError",
        "job was cancelled".into(),
        None,
    )
}

pub(crate) fn internal(node: &str, message: String) -> TaskResult {
    failed(node, true, "InternalError", message, None)
}

/// `MANTA_OUTPUT_BASE`: outputs are named this plus a uuid.
pub(crate) fn output_base(r: &TaskRequest) -> String {
    let root = format!("/{}/jobs/{}/stor", r.account, r.job);
    match &r.input {
        TaskInput::Object { path, .. } => format!("{root}{path}.{}.", r.phase),
        TaskInput::Reducer(n) => format!("{root}/reduce.{}.{n}.", r.phase),
    }
}

async fn object(sh: &Shared, path: &str) -> Result<Option<Data>, TaskResult> {
    // A metadata service or database restarting is ridden out (a read: retrying is safe),
    // rather than failing the task at once: its retries would all land in the same outage.
    let start = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match sh.objects.meta.get(path).await {
            Ok(e) => return Ok(e.and_then(|e| e.data)),
            Err(e)
                if mobula_metadata::client::unavailable(&e)
                    && start.elapsed() < METADATA_OUTAGE =>
            {
                tracing::warn!("looking up {path}: {e}; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(internal(&sh.cfg.node_id, format!("metadata: {e}"))),
        }
    }
}

/// How long a task's metadata read waits out an outage of the service or its database.
const METADATA_OUTAGE: std::time::Duration = std::time::Duration::from_secs(15);

/// A local data file (with its id) holding what a task wrote to one of its streams.
type Stream = (Option<(String, OutputFile)>, u64);

/// Stream `r` into a local data file, created at the first byte (most tasks write nothing to
/// stderr: no file is made for it then).
async fn copy(objects: &Objects, r: Option<pipe::Receiver>) -> std::io::Result<Stream> {
    let (mut file, mut n) = (None, 0u64);
    if let Some(mut r) = r {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let k = r.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            let (_, w) = match &mut file {
                Some(f) => f,
                None => file.insert(objects.writer()?),
            };
            w.write(&buf[..k])?;
            n += k as u64;
        }
    }
    Ok((file, n))
}

/// Write each fed object to the reducer's stdin, in order; close it at the end.
async fn feed(sh: &Shared, rx: Option<mpsc::UnboundedReceiver<FeedMsg>>, tx: Option<pipe::Sender>) {
    let (Some(mut rx), Some(mut tx)) = (rx, tx) else {
        return;
    };
    while let Some(FeedMsg::Path(p, known)) = rx.recv().await {
        let found = match known {
            Some(d) => Ok(Some(d)),
            None => object(sh, &p).await,
        };
        let data = match found {
            Ok(Some(d)) => d,
            _ => {
                tracing::warn!("reducer input {p} is gone; skipped");
                continue;
            }
        };
        let fed = match sh.objects.for_feed(&data).await {
            Ok(Feed::Bytes(b)) => tx.write_all(&b).await,
            Ok(Feed::File(f)) => {
                let Ok(mut file) = tokio::fs::File::open(&f.path).await else {
                    continue;
                };
                tokio::io::copy(&mut file, &mut tx).await.map(drop)
            }
            Err(e) => {
                tracing::warn!("reducer input {p}: {e}; skipped");
                continue;
            }
        };
        if fed.is_err() {
            return; // the reducer closed its stdin or exited
        }
    }
    let _ = tx.shutdown().await;
}

fn log(sh: &Shared, l: &TaskLog) {
    if let Ok(mut b) = serde_json::to_vec(l) {
        b.push(b'\n');
        let mut f = sh.log.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(&b);
    }
}

/// Run `req` to its end.
pub(crate) async fn run(sh: &Arc<Shared>, e: &Arc<Entry>, req: TaskRequest) -> TaskResult {
    let node = sh.cfg.node_id.clone();
    let mut record = TaskLog {
        key: req.key.clone(),
        node: node.clone(),
        input: None,
        data_id: None,
        local: true,
        failed: true,
        group_task: 0,
        container: 0,
        cpu_ms: 0,
        memory_peak: 0,
    };
    let r = prepare_and_run(sh, e, &req, &mut record).await;
    record.failed = r.failure.is_some();
    log(sh, &record);
    r
}

async fn prepare_and_run(
    sh: &Arc<Shared>,
    e: &Arc<Entry>,
    req: &TaskRequest,
    record: &mut TaskLog,
) -> TaskResult {
    let node = sh.cfg.node_id.as_str();
    let base = output_base(req);
    let p = &req.spec;
    let mut spec = TaskSpec::new(Vec::new());
    spec.image = p.image().to_string();
    spec.limits.memory_mib = p.memory_mib();
    spec.limits.disk_mib = p.disk_mib();
    spec.env = vec![
        ("PATH".into(), format!("{TOOLS_BIN}:{DEFAULT_PATH}")),
        ("MANTA_USER".into(), req.account.clone()),
        ("MANTA_JOB_ID".into(), req.job.clone()),
        ("MANTA_OUTPUT_BASE".into(), base.clone()),
        ("MOBULA_TOOLS_SOCKET".into(), SOCKET.into()),
    ];
    let mut held: Vec<LocalFile> = Vec::new();
    let stdin = match inputs(sh, req, &mut spec, record, &mut held).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    if e.is_killed() {
        return cancelled_result(node);
    }
    let Some(slot) = slot(sh, e, req).await else {
        return cancelled_result(node);
    };
    let (mut running, (stdin, stdout, stderr), tools) =
        match launch(sh, req, spec, stdin, &base).await {
            Ok(l) => l,
            Err(r) => return r,
        };
    let feeder = feed(sh, e.take_feed(), stdin).fuse();
    let copies = async { tokio::join!(copy(&sh.objects, stdout), copy(&sh.objects, stderr)) };
    tokio::pin!(feeder);
    tokio::pin!(copies);
    let mut cancelled = false;
    let (out, err) = loop {
        tokio::select! {
            r = &mut copies => break r,
            _ = e.killed(), if !cancelled => {
                cancelled = true;
                running.cancel();
            }
            _ = &mut feeder => {}
        }
    };
    let report = running.wait().await;
    let (mut outputs, used_tools, listener) = tools.stop().await;
    drop(held);
    let report = match report {
        Ok(r) => r,
        Err(err) => return internal(node, format!("sandbox: {err}")),
    };
    let problem = classify(
        &report,
        p.init.is_some() && running.ran_init(),
        p.memory_mib(),
    );
    let (Ok((out_file, out_len)), Ok((err_file, _))) = (out, err) else {
        running.finish(sh, false, None, record, &report);
        return internal(node, "reading the task's output failed".into());
    };
    // The container serves the phase's next task only after a clean success.
    let clean = problem.is_none() && report.error.is_none() && !e.is_killed();
    running.finish(sh, clean, listener, record, &report);
    // The program is over (and its container back in the pool): the slot goes to the next
    // task while this one's output is made durable and its result logged.
    drop(slot);
    if e.is_killed() {
        return cancelled_result(node);
    }
    if let Some(m) = &report.error {
        return internal(node, format!("sandbox: {m}"));
    }
    if let Some((code, message)) = problem {
        let stderr = if let Some((err_id, err_w)) = err_file {
            let path = format!("{base}stderr.{}", uuid::Uuid::new_v4());
            match sh
                .objects
                .commit(err_id, err_w, &path, true, Default::default())
                .await
            {
                Ok(_) => Some(path),
                Err(e) => return internal(node, format!("saving stderr: {e}")),
            }
        } else {
            None
        };
        return failed(node, false, code, message, stderr);
    }
    drop(err_file);
    let mut objects = Vec::new();
    if out_len > 0 || !used_tools {
        // Stdout's data is made durable here; its object is created by the coordinator in
        // the transaction that logs this result (one metadata write per step, not per task).
        let (out_id, out_w) = match out_file.map_or_else(|| sh.objects.writer(), Ok) {
            Ok(f) => f,
            Err(e) => return internal(node, format!("cannot create the output file: {e}")),
        };
        let path = format!("{base}{}", uuid::Uuid::new_v4());
        match sh.objects.store(out_id, out_w).await {
            Ok(d) => {
                outputs.push(Output {
                    path: path.clone(),
                    nodes: d.nodes.clone(),
                    reducer: None,
                });
                objects.push(output(&path, true, &d, Default::default()));
            }
            Err(e) => return internal(node, format!("saving stdout: {e}")),
        }
    }
    TaskResult {
        node: node.to_string(),
        outputs,
        objects,
        failure: None,
    }
}

/// A task's hold on its node while its program runs: one of the node's slots (a map task's;
/// reducers take none, as in the scheduler) and its count in `mobula_tasks_running`.
struct Slot<'a> {
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
    _running: Counted<'a>,
}

/// One count in a gauge for as long as it is held.
struct Counted<'a>(&'a metrics::Gauge);

impl<'a> Counted<'a> {
    fn on(g: &'a metrics::Gauge) -> Counted<'a> {
        g.increment(1.0);
        Counted(g)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Wait for a slot (a map task), counted in `mobula_tasks_waiting` meanwhile, or `None` if the
/// run is killed first.
async fn slot<'a>(sh: &'a Shared, e: &Entry, req: &TaskRequest) -> Option<Slot<'a>> {
    let permit = match req.input {
        // A free slot is taken at once (a permit is free only while none waits: FIFO).
        TaskInput::Object { .. } => match sh.slots.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                let _waiting = Counted::on(&sh.waiting);
                tokio::select! {
                    p = sh.slots.acquire() => p.ok(), // never closed
                    _ = e.killed() => return None,
                }
            }
        },
        TaskInput::Reducer(_) => None,
    };
    Some(Slot {
        _permit: permit,
        _running: Counted::on(&sh.running),
    })
}

/// Bind the task's input (or set up a reducer's pipe) and its assets; the files to keep
/// until the task ends go to `held`.
async fn inputs(
    sh: &Shared,
    req: &TaskRequest,
    spec: &mut TaskSpec,
    record: &mut TaskLog,
    held: &mut Vec<LocalFile>,
) -> Result<Input, TaskResult> {
    let node = sh.cfg.node_id.as_str();
    let p = &req.spec;
    let stdin = match &req.input {
        TaskInput::Object { path, .. } => {
            // The coordinator's view of the input when it has one and this node's copy is
            // there (the task was placed for that copy); otherwise a lookup of our own.
            let hinted = req
                .data
                .as_ref()
                .and_then(|d| Some((d, sh.objects.local_copy(d)?)));
            let (data, f) = match hinted {
                Some((d, f)) => (d.clone(), f),
                None => located(sh, path, "ResourceNotFoundError", "", "reading ").await?,
            };
            record.input = Some(path.clone());
            record.data_id = Some(data.id.clone());
            record.local = f.local;
            let inside = format!("/manta{path}");
            spec.env.push(("MANTA_INPUT_OBJECT".into(), path.clone()));
            spec.env.push(("MANTA_INPUT_FILE".into(), inside.clone()));
            spec.binds.push(Bind {
                host: f.path.to_string_lossy().into_owned(),
                inside,
                writable: false,
            });
            let file = match std::fs::File::open(&f.path) {
                Ok(file) => file,
                Err(e) => return Err(internal(node, format!("opening {path}: {e}"))),
            };
            held.push(f);
            Input::File(file)
        }
        TaskInput::Reducer(n) => {
            spec.env.push(("MANTA_REDUCER".into(), n.to_string()));
            Input::Pipe
        }
    };
    for a in &p.assets {
        let (_, f) = located(sh, a, "TaskInitError", "asset ", "asset ").await?;
        spec.binds.push(Bind {
            host: f.path.to_string_lossy().into_owned(),
            inside: format!("/assets{a}"),
            writable: false,
        });
        held.push(f);
    }
    Ok(stdin)
}

/// `path`'s data and a file of it on this node (copied here when the node has none). A missing
/// object fails the task with `code`, not retried ("`{missing}{path}` does not exist"); a copy
/// that cannot be had is an internal failure ("`{error}{path}`: …").
async fn located(
    sh: &Shared,
    path: &str,
    code: &str,
    missing: &str,
    error: &str,
) -> Result<(Data, LocalFile), TaskResult> {
    let node = sh.cfg.node_id.as_str();
    let Some(data) = object(sh, path).await? else {
        let m = format!("{missing}{path} does not exist");
        return Err(failed(node, false, code, m, None));
    };
    match sh.objects.local_file(&data).await {
        Ok(f) => Ok((data, f)),
        Err(e) => Err(internal(node, format!("{error}{path}: {e}"))),
    }
}

/// The user-facing failure of a finished task, if it failed.
fn classify(r: &Report, has_init: bool, memory: u64) -> Option<(&'static str, String)> {
    if r.oom_killed {
        return Some((
            "TaskKilledError",
            format!("task ran out of memory ({memory} MiB)"),
        ));
    }
    if r.timed_out {
        return Some(("TaskKilledError", "task ran out of time".into()));
    }
    if r.success() {
        return None;
    }
    if has_init && r.exit_code == Some(argv::INIT_FAILED) {
        return Some(("TaskInitError", "the phase's init command failed".into()));
    }
    let m = match (r.exit_code, r.signal) {
        (_, Some(s)) if r.core_dumped => format!("user command dumped core (signal {s})"),
        (_, Some(s)) => format!("user command was killed by signal {s}"),
        (Some(c), _) => format!("user command exited with status {c}"),
        _ => "user command failed".into(),
    };
    Some(("UserTaskError", m))
}

/// The task's own tools socket at `path` (bound at [`SOCKET`] inside its sandbox).
pub(crate) fn make_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)?;
    // The task's ids are unmapped on the host: it connects as "other".
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

pub(crate) struct RemoveFile(pub std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
