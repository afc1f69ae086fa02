//! Starting a task's program: a map task in its phase's task group ([`super::groups`]), a
//! reducer in a container of its own. Either way the caller gets the task's streams, its tools
//! server (socket scope: the task's own account and output base) and a [`Handle`] to cancel
//! and wait on; [`Handle::finish`] returns a group's container to the pool only after a
//! success.

use std::sync::Arc;

use mobula_sandbox::{Bind, Input, Report, Running, TaskSpec};
use tokio::net::unix::pipe;
use tokio::net::UnixListener;

use super::argv;
use super::groups::{GroupKey, Pooled};
use super::socket::{Scope, ToolServer};
use super::task::{failed, internal, make_socket, RemoveFile};
use super::Shared;
use crate::api::{TaskLog, TaskRequest, TaskResult};
use crate::schedule::TaskInput;
use crate::tools::{SOCKET, TOOLS_BIN, TOOLS_EXE};

/// Where the tools socket's directory is bound in a group's container.
const SOCKET_DIR: &str = "/run/mobula";

/// A started task.
pub(crate) enum Handle {
    /// A container of its own; its tools socket file is removed when the handle drops.
    Single {
        run: Option<Running>,
        _socket: RemoveFile,
    },
    /// A task group's container (fresh: this task is its first, and ran `init`).
    Group(Pooled, bool),
}

/// The task's stdin (a reducer's pipe), stdout and stderr.
pub(crate) type Streams = (
    Option<pipe::Sender>,
    Option<pipe::Receiver>,
    Option<pipe::Receiver>,
);

impl Handle {
    pub fn cancel(&mut self) {
        match self {
            Handle::Single { run, .. } => run.iter().for_each(Running::cancel),
            Handle::Group(p, _) => p.group.cancel(),
        }
    }

    /// Wait for the task's report.
    pub async fn wait(&mut self) -> std::io::Result<Report> {
        match self {
            Handle::Single { run, .. } => match run.take() {
                Some(r) => r.wait().await,
                None => Err(std::io::Error::other("waited twice")),
            },
            Handle::Group(p, _) => p.group.wait().await,
        }
    }

    /// Whether the phase's `init` ran before this task's command (in its container).
    pub fn ran_init(&self) -> bool {
        !matches!(self, Handle::Group(_, false))
    }

    /// After the task (its tools server stopped, which gave back `listener`): keep a group's
    /// container, with its tools socket, for the next task of its phase if `reuse`.
    pub fn finish(
        self,
        sh: &Shared,
        reuse: bool,
        listener: Option<UnixListener>,
        record: &mut TaskLog,
        report: &Report,
    ) {
        record.cpu_ms = report.cpu_user_ms + report.cpu_sys_ms;
        record.memory_peak = report.memory_peak;
        if let Handle::Group(mut p, _) = self {
            record.group_task = p.group.tasks;
            record.container = p.id;
            if reuse && !p.group.is_over() && listener.is_some() {
                p.listener = listener;
                sh.groups.put(p);
            }
        }
    }
}

/// Start `spec` (argv not yet set; binds: its input below `/manta` and its assets) for `req`.
pub(crate) async fn launch(
    sh: &Arc<Shared>,
    req: &TaskRequest,
    mut spec: TaskSpec,
    stdin: Input,
    base: &str,
) -> Result<(Handle, Streams, ToolServer), TaskResult> {
    let node = sh.cfg.node_id.as_str();
    let started = std::time::Instant::now();
    let setup = |container: &'static str| {
        metrics::histogram!("mobula_sandbox_setup_seconds", "container" => container)
            .record(started.elapsed());
    };
    let p = &req.spec;
    let scope = Scope {
        account: req.account.clone(),
        base: base.to_string(),
    };
    let agent_dir = sh.cfg.node_dir.join("agent");
    let tools = [
        (agent_dir.join("bin"), TOOLS_BIN),
        (sh.cfg.exe.clone(), TOOLS_EXE),
    ];
    let bind = |host: &std::path::Path, inside: &str| Bind {
        host: host.to_string_lossy().into_owned(),
        inside: inside.into(),
        writable: false,
    };
    let start_failed = |err: std::io::Error| {
        let m = format!("could not start the task: {err}");
        failed(node, false, "TaskInitError", m, None)
    };
    if !matches!(req.input, TaskInput::Object { .. }) {
        let (argv, env) = argv::argv(&p.exec, p.init.as_deref(), &spec.cwd);
        spec.argv = argv;
        spec.env.extend(env);
        let sock = agent_dir.join("t").join(format!("{}.sock", req.key));
        let listener =
            make_socket(&sock).map_err(|e| internal(node, format!("tools socket: {e}")))?;
        let cleanup = RemoveFile(sock.clone());
        spec.binds.push(bind(&sock, SOCKET));
        spec.binds.extend(tools.iter().map(|(h, i)| bind(h, i)));
        let server = ToolServer::start(sh.clone(), listener, scope);
        return match sh.sandbox.spawn(&spec, stdin) {
            Ok(mut r) => {
                setup("new");
                let streams = (r.stdin.take(), r.stdout.take(), r.stderr.take());
                Ok((
                    Handle::Single {
                        run: Some(r),
                        _socket: cleanup,
                    },
                    streams,
                    server,
                ))
            }
            Err(e) => {
                server.stop().await;
                Err(start_failed(e))
            }
        };
    }
    let key = GroupKey {
        account: req.account.clone(),
        job: req.job.clone(),
        phase: req.phase,
    };
    let (inputs, shared): (Vec<Bind>, Vec<Bind>) = std::mem::take(&mut spec.binds)
        .into_iter()
        .partition(|b| b.inside.starts_with("/manta/"));
    let (mut pooled, fresh) = match sh.groups.take(&key) {
        Some(g) => (g, false),
        None => {
            let (dir, id) = sh
                .groups
                .new_dir()
                .map_err(|e| internal(node, format!("container directory: {e}")))?;
            let mut gs = spec.clone();
            gs.binds = shared;
            gs.binds.push(bind(&dir, SOCKET_DIR));
            gs.binds.extend(tools.iter().map(|(h, i)| bind(h, i)));
            let group = sh.sandbox.group(&gs).map_err(start_failed)?;
            let pooled = Pooled {
                group,
                key,
                dir,
                id,
                listener: None,
            };
            (pooled, true)
        }
    };
    // `init` runs once per container: before the first task's command.
    let init = if fresh { p.init.as_deref() } else { None };
    let (argv, env) = argv::argv(&p.exec, init, &spec.cwd);
    spec.argv = argv;
    spec.env.extend(env);
    spec.binds = inputs;
    let listener = match pooled.listener.take() {
        Some(l) => l,
        None => make_socket(&pooled.dir.join("sock"))
            .map_err(|e| internal(node, format!("tools socket: {e}")))?,
    };
    let server = ToolServer::start(sh.clone(), listener, scope);
    match pooled.group.spawn(&spec, stdin) {
        Ok(s) => {
            setup(if fresh { "new" } else { "live" });
            Ok((
                Handle::Group(pooled, fresh),
                (s.stdin, s.stdout, s.stderr),
                server,
            ))
        }
        Err(e) => {
            server.stop().await;
            let m = format!("could not start the task in its container: {e}");
            Err(internal(node, m))
        }
    }
}
