//! What the coordinator and a node's agent say to each other (`/tasks/...` on the node).
//!
//! - `POST /tasks/run` [`TaskRequest`] → [`TaskResult`] once the task has finished (the request
//!   stays open while it runs). The same `key` again — a coordinator that restarted — attaches
//!   to the running task, or gets the result of a finished one: a task runs once per key.
//! - `POST /tasks/feed` [`Feed`] → 204: a reducer's next inputs, numbered from `from` (a
//!   number seen before is ignored, so resending after a restart is harmless); `end` after them.
//! - `POST /tasks/kill` [`Key`] → 204.

use std::collections::BTreeMap;

use mobula_metadata::api::{Data, PutObject};
use serde::{Deserialize, Serialize};

use crate::schedule::{Failure, Output, TaskInput};
use crate::spec::Phase;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRequest {
    /// `<job>.<task>.<attempt>`: one run of one task.
    pub key: String,
    pub job: String,
    pub account: String,
    pub phase: usize,
    pub spec: Phase,
    pub input: TaskInput,
    /// A map input's data as the coordinator located it, which spares the agent a lookup
    /// (it looks the path up itself when this is absent or its file is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Data>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    /// The node that ran it.
    pub node: String,
    pub outputs: Vec<Output>,
    /// Outputs whose data is durable but whose objects the coordinator creates, in the
    /// transaction that logs this result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<PutObject>,
    /// Set when the task failed.
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feed {
    pub key: String,
    pub from: u64,
    pub paths: Vec<String>,
    pub end: bool,
    /// The data of those paths the coordinator knows (outputs it just created): the agent
    /// looks up only the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub known: BTreeMap<String, Data>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub key: String,
}

/// One line of a node's task log (`<node>/agent/tasks.log`): where each task ran and whether
/// its input was read from the node's own volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskLog {
    pub key: String,
    pub node: String,
    pub input: Option<String>,
    pub data_id: Option<String>,
    pub local: bool,
    pub failed: bool,
    /// Which container ran it: the task's place in its task group (1 = the container's first
    /// task, which ran the phase's `init`), 0 for a container of its own (reducers).
    #[serde(default)]
    pub group_task: u64,
    /// The container's identity on this node (tasks of one group share it).
    #[serde(default)]
    pub container: u64,
    /// CPU time (user + system) of the task's processes, milliseconds.
    #[serde(default)]
    pub cpu_ms: u64,
    /// Peak memory of the container while the task ran, bytes.
    #[serde(default)]
    pub memory_peak: u64,
}
