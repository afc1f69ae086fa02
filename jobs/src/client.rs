//! The client of a node's agent: what the coordinator says to it ([`crate::api`] has the
//! protocol). Errors say whether the agent was reached ([`AgentError`]); their messages never
//! carry the agent's URL, since they end up in users' error records.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::StatusCode;
use mobula_http::ApiError;
use mobula_storage_node::{InProcess, LocalNodes};

use crate::api::{Feed, Key, TaskRequest, TaskResult};

/// Why a request to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No exchange with the agent (refused, reset, timed out).
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with this status.
    #[error("agent answered {0}")]
    Status(u16),
    /// The agent's answer could not be read.
    #[error("agent's answer: {0}")]
    BadAnswer(String),
}

fn unreachable(e: reqwest::Error) -> AgentError {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    AgentError::Unreachable(msg)
}

/// A client for any node's agent (named by the node's URL per call; cheap to clone). An agent
/// whose node runs in this process ([`LocalNodes`]) is called directly — the same checks and
/// answers as over HTTP, without the request, its JSON or a connection; a call in flight when
/// that node stops fails as unreachable, as its dropped connection would.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    local: Option<LocalNodes>,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An agent in this process, answering as its `/tasks/` routes do (the agent of feature
/// `agent` is one; its node's [`mobula_storage_node::Extension::local`] holds it as an
/// `Arc<dyn LocalAgent>`).
pub trait LocalAgent: Send + Sync {
    /// `POST /tasks/run`.
    fn run(&self, r: TaskRequest) -> BoxFuture<'_, Result<TaskResult, ApiError>>;
    /// `POST /tasks/feed`.
    fn feed(&self, f: &Feed);
    /// `POST /tasks/kill`.
    fn kill(&self, k: &Key);
}

/// Count an in-process call as the node's server counts a `/tasks/` request.
fn counted(status: StatusCode, started: std::time::Instant) {
    mobula_http::telemetry::request("node", "Tasks", status, started);
}

/// An agent's node stopped with the call in flight (its connection would have dropped).
fn stopped() -> AgentError {
    AgentError::Unreachable("the node stopped".into())
}

impl AgentClient {
    /// A client that calls the agents of `local`'s nodes in this process.
    pub fn with_local(local: Option<LocalNodes>) -> Self {
        AgentClient {
            local,
            ..Self::new()
        }
    }

    /// The agent of the node at `url` when that node runs in this process.
    fn in_process(&self, url: &str) -> Option<(Arc<dyn LocalAgent>, InProcess)> {
        let p = self.local.as_ref()?.extension(url)?;
        let agent = p.handle.downcast_ref::<Arc<dyn LocalAgent>>()?.clone();
        Some((agent, p))
    }

    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(mobula_http::POOL_IDLE_PER_HOST)
            .pool_idle_timeout(mobula_http::POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client always builds");
        AgentClient { http, local: None }
    }

    async fn post<T: serde::Serialize>(
        &self,
        url: &str,
        what: &str,
        body: &T,
    ) -> Result<reqwest::Response, AgentError> {
        let resp = self
            .http
            .post(format!("{url}/tasks/{what}"))
            .json(body)
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(AgentError::Status(resp.status().as_u16()));
        }
        Ok(resp)
    }

    /// Run a task on the agent at `url`; resolves with its result when it has finished.
    pub async fn run(&self, url: &str, req: TaskRequest) -> Result<TaskResult, AgentError> {
        if let Some((agent, mut node)) = self.in_process(url) {
            let started = std::time::Instant::now();
            return tokio::select! {
                r = agent.run(req) => {
                    let status = r.as_ref().map_or_else(|e| e.status(), |_| StatusCode::OK);
                    counted(status, started);
                    r.map_err(|_| AgentError::Status(status.as_u16()))
                }
                _ = node.stopped() => Err(stopped()),
            };
        }
        let resp = self.post(url, "run", &req).await?;
        resp.json()
            .await
            .map_err(|e| AgentError::BadAnswer(e.without_url().to_string()))
    }

    /// Hand a reducer its next inputs.
    pub async fn feed(&self, url: &str, f: &Feed) -> Result<(), AgentError> {
        if let Some((agent, _)) = self.in_process(url) {
            agent.feed(f);
            counted(StatusCode::NO_CONTENT, std::time::Instant::now());
            return Ok(());
        }
        self.post(url, "feed", f).await.map(|_| ())
    }

    /// Stop a task (best effort).
    pub async fn kill(&self, url: &str, key: &Key) -> Result<(), AgentError> {
        if let Some((agent, _)) = self.in_process(url) {
            agent.kill(key);
            counted(StatusCode::NO_CONTENT, std::time::Instant::now());
            return Ok(());
        }
        self.post(url, "kill", key).await.map(|_| ())
    }
}

#[cfg(all(test, feature = "agent"))]
#[path = "client_tests.rs"]
mod tests;
