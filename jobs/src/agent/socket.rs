//! The in-task tools' side in the agent: one unix socket per task (bound read-only into its
//! sandbox at [`crate::tools::SOCKET`]), one request per connection
//! ([`crate::tools::ToolRequest`]). It acts only as the job's account: reads (`mcat`) of that
//! account's objects or anyone's `public`, writes (`mpipe`, `mtee`) under its own `stor`,
//! `public` or `jobs`. Outputs it creates are collected for the task's result.

use std::sync::Arc;

use mobula_http::ApiError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use crate::schedule::Output;
use crate::spec::{readable_by, writable_by};
use crate::tools::{ToolReply, ToolRequest};

/// Who the task acts as and where its default outputs go.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub account: String,
    pub base: String,
}

/// A running tools server; [`ToolServer::stop`] ends it and returns what the tools emitted,
/// and the listener (a task group's container keeps its socket for its next task).
pub(crate) struct ToolServer {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<(Vec<Output>, bool, Option<UnixListener>)>,
}

impl ToolServer {
    pub fn start(sh: Arc<Shared>, listener: UnixListener, scope: Scope) -> ToolServer {
        let (stop, mut stopped) = oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            let mut used = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    c = listener.accept() => {
                        let Ok((c, _)) = c else { break };
                        used = true;
                        conns.spawn(handle(sh.clone(), c, scope.clone()));
                    }
                }
            }
            let mut outputs = Vec::new();
            while let Some(r) = conns.join_next().await {
                outputs.extend(r.unwrap_or_default());
            }
            (outputs, used, drain(listener))
        });
        ToolServer { stop, handle }
    }

    /// Stop accepting, finish the requests in flight (the task is gone, so they end), and
    /// return the outputs, whether any tool was used, and the listener with nothing pending.
    pub async fn stop(self) -> (Vec<Output>, bool, Option<UnixListener>) {
        let _ = self.stop.send(());
        self.handle.await.unwrap_or_default()
    }
}

/// The listener with any connection still queued dropped: the task that made it is gone (its
/// container's pid 1 killed every process of it before the task was reported), so it must not
/// reach the next task's server, whose scope differs.
fn drain(listener: UnixListener) -> Option<UnixListener> {
    let l = listener.into_std().ok()?;
    l.set_nonblocking(true).ok()?;
    while l.accept().is_ok() {}
    UnixListener::from_std(l).ok()
}

async fn handle(sh: Arc<Shared>, c: UnixStream, scope: Scope) -> Vec<Output> {
    let (r, mut w) = c.into_split();
    let mut r = BufReader::with_capacity(256 << 10, r);
    let mut line = Vec::new();
    let res = match (&mut r).take(1 << 20).read_until(b'\n', &mut line).await {
        Ok(_) => match serde_json::from_slice::<ToolRequest>(&line) {
            Ok(req) => serve(&sh, &mut r, req, &scope).await,
            Err(e) => Err(ApiError::new(
                mobula_http::Code::InvalidArgument,
                e.to_string(),
            )),
        },
        Err(e) => Err(ApiError::internal(e)),
    };
    let (reply, outputs) = match res {
        Ok(o) => (
            ToolReply {
                ok: true,
                message: String::new(),
            },
            o,
        ),
        Err(e) => (
            ToolReply {
                ok: false,
                message: e.message,
            },
            Vec::new(),
        ),
    };
    let mut b = serde_json::to_vec(&reply).unwrap_or_default();
    b.push(b'\n');
    let _ = w.write_all(&b).await;
    outputs
}

fn denied(p: &str) -> ApiError {
    ApiError::new(
        mobula_http::Code::AuthorizationFailed,
        format!("{p}: not an object this job may use"),
    )
}

async fn serve(
    sh: &Shared,
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    req: ToolRequest,
    scope: &Scope,
) -> Result<Vec<Output>, ApiError> {
    match req.op.as_str() {
        "cat" => {
            let mut out = Vec::new();
            for p in &req.paths {
                if !readable_by(p, &scope.account) {
                    return Err(denied(p));
                }
                let data = sh
                    .objects
                    .meta
                    .get(p)
                    .await?
                    .and_then(|e| e.data)
                    .ok_or_else(|| {
                        ApiError::new(
                            mobula_http::Code::ResourceNotFound,
                            format!("{p} does not exist"),
                        )
                    })?;
                out.push(Output {
                    path: p.clone(),
                    nodes: data.nodes,
                    reducer: None,
                });
            }
            Ok(out)
        }
        "pipe" | "save" => {
            let output = req.op == "pipe";
            let path = match (&req.path, output) {
                (Some(p), _) => p.clone(),
                (None, true) => format!("{}{}", scope.base, uuid::Uuid::new_v4()),
                (None, false) => {
                    return Err(ApiError::new(
                        mobula_http::Code::InvalidArgument,
                        "a path is needed",
                    ))
                }
            };
            if !writable_by(&path, &scope.account) {
                return Err(denied(&path));
            }
            let (id, mut w) = sh.objects.writer().map_err(ApiError::internal)?;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = r.read(&mut buf).await.map_err(ApiError::internal)?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n]).map_err(ApiError::internal)?;
            }
            let parents = req.parents || req.path.is_none();
            let data = sh
                .objects
                .commit(id, w, &path, parents, req.headers.clone())
                .await?;
            Ok(if output {
                vec![Output {
                    path,
                    nodes: data.nodes,
                    reducer: req.reducer,
                }]
            } else {
                Vec::new()
            })
        }
        op => Err(ApiError::new(
            mobula_http::Code::InvalidArgument,
            format!("unknown tool request {op}"),
        )),
    }
}
