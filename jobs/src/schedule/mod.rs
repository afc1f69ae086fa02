//! The scheduling core of a job: a pure state machine. It is fed [`Event`]s (inputs arrive, the
//! input ends, tasks finish or fail, nodes come and go, cancel) and answers with [`Command`]s
//! (run this task on that node, feed that reducer, kill, record an error, publish an output,
//! the job is done). No I/O, no clocks: the caller (the jobs service) persists events, performs
//! commands, and can replay a job's events into a fresh machine after a restart.
//!
//! Rules (SPEC §4):
//! - one map task per input object, on a live node holding a copy, least loaded first (a
//!   zero-byte object, or a task with no copy to follow, runs anywhere); a missing input is a
//!   `ResourceNotFoundError` record and no task;
//! - never more map tasks placed on a node than its slots; the rest wait, in arrival order (the
//!   coordinator gives the machine three slots per slot of a node's agent, which runs at most
//!   its own at once: the others wait there, to start the moment a program ends);
//!   (reducers take no slot: they mostly wait on input, and one holding the last slot while the
//!   tasks feeding it queue would never finish);
//! - phases stream: a map phase's outputs become the next map phase's tasks as they appear, or
//!   are fed to the next reduce phase's reducers (by the output's reducer index from `mpipe -r`
//!   or `msplit`, else by a hash of the path); a reducer's input ends once the phase before it
//!   is done; reducers exist from the start (`count` of them);
//! - internal failures (node lost, agent crash) are retried up to 2 times, on a node not tried
//!   before when there is one; user failures never are;
//! - cancel kills what runs and finishes the job; a job is done when its input has ended and
//!   every task has finished.

mod machine;
#[cfg(test)]
mod tests;
mod waiting;

pub use machine::Machine;

use serde::{Deserialize, Serialize};

pub type TaskId = u64;
pub type NodeId = String;

/// FNV-1a: stable across runs and platforms (routing by it must replay identically); routes
/// outputs to reducers here and lines to reducers in `msplit`.
pub fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Most times a task is run after an internal failure.
pub const MAX_RETRIES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    Map,
    Reduce,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseShape {
    pub kind: PhaseKind,
    /// Reducers (reduce phases only).
    pub count: u32,
}

/// An object as the caller found it: missing, a directory, or its size and the nodes holding a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Located {
    Missing,
    /// A directory: not an input a task can read.
    Directory,
    Object {
        size: u64,
        nodes: Vec<NodeId>,
    },
}

/// An object a task emitted, with where its copies are and (optionally) the reducer it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub path: String,
    pub nodes: Vec<NodeId>,
    pub reducer: Option<u32>,
}

/// What a task works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskInput {
    /// A map task's object (and the nodes holding it; empty = anywhere).
    Object { path: String, nodes: Vec<NodeId> },
    /// Reducer number `n` of its phase (its input arrives by [`Command::Feed`]).
    Reducer(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A node can run `slots` tasks at once (also: its slots changed, or it came back).
    NodeUp {
        node: NodeId,
        slots: u32,
    },
    /// A node stopped answering: its running tasks failed internally.
    NodeLost {
        node: NodeId,
    },
    Input {
        path: String,
        at: Located,
    },
    EndInput,
    Cancel,
    Done {
        task: TaskId,
        outputs: Vec<Output>,
    },
    Failed {
        task: TaskId,
        failure: Failure,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Internal (node lost, agent crash: retried) or the user's (never retried).
    pub internal: bool,
    pub code: String,
    pub message: String,
    /// Object holding the task's stderr, when saved.
    pub stderr: Option<String>,
}

/// An error record (`live/err`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrRecord {
    pub phase: usize,
    pub code: String,
    pub message: String,
    pub stderr: Option<String>,
    pub input: Option<String>,
    pub p0input: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Run {
        task: TaskId,
        phase: usize,
        node: NodeId,
        input: TaskInput,
    },
    /// Append an object to a running reducer's stdin.
    Feed {
        task: TaskId,
        path: String,
    },
    /// The reducer's stdin ends after what was fed.
    EndFeed {
        task: TaskId,
    },
    Kill {
        task: TaskId,
    },
    Error(ErrRecord),
    /// A final output (`live/out`).
    Out(String),
    JobDone,
}

/// Counters for `live/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub tasks: u64,
    pub tasks_done: u64,
    pub errors: u64,
    pub outputs: u64,
    pub retries: u64,
    /// Per phase: tasks, and those finished (`mobula job watch`).
    #[serde(default)]
    pub phases: Vec<PhaseStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub tasks: u64,
    pub done: u64,
}
