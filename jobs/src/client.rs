//! The client of a node's agent: what the coordinator says to it ([`crate::api`] has the
//! protocol). Errors say whether the agent was reached ([`AgentError`]); their messages never
//! carry the agent's URL, since they end up in users' error records.

use std::time::Duration;

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

/// A client for any node's agent (named by the node's URL per call; cheap to clone).
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
}

impl Default for AgentClient {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(mobula_http::POOL_IDLE_PER_HOST)
            .pool_idle_timeout(mobula_http::POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client always builds");
        AgentClient { http }
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
    pub async fn run(&self, url: &str, req: &TaskRequest) -> Result<TaskResult, AgentError> {
        let resp = self.post(url, "run", req).await?;
        resp.json()
            .await
            .map_err(|e| AgentError::BadAnswer(e.without_url().to_string()))
    }

    /// Hand a reducer its next inputs.
    pub async fn feed(&self, url: &str, f: &Feed) -> Result<(), AgentError> {
        self.post(url, "feed", f).await.map(|_| ())
    }

    /// Stop a task (best effort).
    pub async fn kill(&self, url: &str, key: &Key) -> Result<(), AgentError> {
        self.post(url, "kill", key).await.map(|_| ())
    }
}
