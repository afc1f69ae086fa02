//! One job's actor: rebuilds the job from its event log, then loops — gather events (task
//! results, new inputs, end, cancel, node changes), apply them to the [`Machine`], log them
//! with the records they produced in one metadata transaction, and only then act on the
//! commands (run, feed, end, kill on the nodes' agents). When the machine says the job is
//! done, archive its record and mark it done.
//!
//! Replay performs no command; afterwards every task the machine still has running is asked
//! for again under the same key (the agent attaches to it or returns its result) with all of
//! its feed, which the agent deduplicates by number. The stdout objects of the results a step
//! logs are created in that same transaction. Gathering lives in `gather`, acting in `runs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Data, JobAppend, JobRecords, JobRow, PutObject};
use mobula_metadata::MetadataClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::NodeView;

mod gather;
mod runs;
use crate::api::TaskResult;
use crate::schedule::{Command, Event, Machine, TaskId, TaskInput};
use crate::spec::JobSpec;

/// A task run the actor started (or found running in the log).
struct Run {
    key: String,
    node: String,
    phase: usize,
    input: TaskInput,
    /// The input's data as located (first run only).
    data: Option<Data>,
    feeds: Vec<String>,
    ended: bool,
    /// How much of `feeds` (and the end) has been handed to the feeder.
    handed: usize,
    end_handed: bool,
    /// Feed commands to the agent, in order (set once the run is started).
    feeder: Option<mpsc::UnboundedSender<runs::FeedBatch>>,
}

/// A run's outcome as its long poll saw it: (task, key, result, agent unreachable).
type Reply = (TaskId, String, TaskResult, bool);

/// How long a node whose agent was unreachable is kept out.
const SUSPECT: Duration = Duration::from_secs(6);
/// Map tasks placed on a node per slot of its agent (the machine's slots are these places):
/// one running, two waiting at the agent for the slot (`agent::Shared::slots`), so that the
/// next starts the moment the program before it ends rather than after that task's output is
/// durable, its result logged and the next task placed — waits in which the node's CPUs idled.
/// (Two waiting rather than one ride out a slow journal commit: CPUs 94% → 95.5% busy.)
const PLACED_PER_SLOT: u32 = 3;
/// Inputs located and logged per step: small enough that the first tasks start while the rest
/// of a large input list is still being located.
const INPUT_BATCH: u32 = 100;

struct Actor {
    row: JobRow,
    spec: JobSpec,
    meta: MetadataClient,
    agents: crate::client::AgentClient,
    store: mobula_storage_node::NodeClient,
    nodes: watch::Receiver<Vec<NodeView>>,
    machine: Machine,
    logged: u64,
    consumed: u64,
    known: BTreeMap<String, (bool, u32)>,
    attempts: HashMap<TaskId, u32>,
    runs: HashMap<TaskId, Run>,
    /// The data of inputs as located and of outputs just created, until the task that reads
    /// one first runs or is fed it (its agent then needs no lookup). Final outputs are not
    /// kept.
    located: HashMap<String, Data>,
    /// Outputs of results just received, created with the step that logs them.
    staged: HashMap<TaskId, Vec<PutObject>>,
    /// This job's share of `mobula_tasks_queued`.
    queued: Queued,
    results: mpsc::UnboundedSender<Reply>,
    /// Nodes whose agent could not be reached, and since when: lost for this job until
    /// [`SUSPECT`] has passed (a dead node's heartbeat is stale by then).
    suspect: HashMap<String, Instant>,
    tasks: JoinSet<()>,
    /// Kill requests in flight (finished before the job is archived).
    kills: JoinSet<()>,
    /// Commands to perform once what produced them is logged.
    todo: Vec<Command>,
    out: Vec<String>,
    err: Vec<String>,
    fail: Vec<String>,
    started: bool,
    /// The job row may have changed since it was last read (poked by the API or the tick).
    poked: bool,
}

pub(super) async fn run(
    id: &str,
    meta: MetadataClient,
    clients: super::Clients,
    nodes: watch::Receiver<Vec<NodeView>>,
    mut pokes: mpsc::UnboundedReceiver<()>,
) -> Result<(), ApiError> {
    let row = meta
        .job(id)
        .await?
        .ok_or_else(|| ApiError::new(Code::JobNotFound, format!("no job {id}")))?;
    let spec: JobSpec = serde_json::from_str(&row.spec)
        .map_err(|e| ApiError::internal(format!("stored spec of {id}: {e}")))?;
    let (machine, cmds) = Machine::new(spec.shapes());
    let (results, mut results_rx) = mpsc::unbounded_channel();
    let mut a = Actor {
        consumed: row.consumed,
        started: row.state != "queued",
        poked: true,
        row,
        spec,
        meta,
        agents: clients.agents,
        store: clients.nodes,
        nodes,
        machine,
        logged: 0,
        known: BTreeMap::new(),
        attempts: HashMap::new(),
        runs: HashMap::new(),
        located: HashMap::new(),
        staged: HashMap::new(),
        queued: Queued::default(),
        results,
        suspect: HashMap::new(),
        tasks: JoinSet::new(),
        kills: JoinSet::new(),
        todo: Vec::new(),
        out: Vec::new(),
        err: Vec::new(),
        fail: Vec::new(),
    };
    a.absorb(cmds, true);
    a.replay().await?;
    loop {
        if a.machine.is_done() {
            return a.finish().await;
        }
        let mut events = Vec::new();
        while let Ok(reply) = results_rx.try_recv() {
            a.result(reply, &mut events);
        }
        loop {
            match pokes.try_recv() {
                Ok(()) => a.poked = true,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        a.gather(&mut events).await?;
        if !events.is_empty() {
            a.step(events).await?;
            continue;
        }
        tokio::select! {
            Some(reply) = results_rx.recv() => {
                let mut events = Vec::new();
                a.result(reply, &mut events);
                if !events.is_empty() {
                    a.step(events).await?;
                }
            }
            p = pokes.recv() => match p {
                Some(()) => a.poked = true,
                None => return Ok(()),
            },
            _ = a.nodes.changed() => {}
        }
    }
}

impl Actor {
    async fn replay(&mut self) -> Result<(), ApiError> {
        loop {
            let page = self
                .meta
                .job_records(&JobRecords {
                    id: self.row.id.clone(),
                    kind: "ev".into(),
                    from: self.logged,
                    limit: 5000,
                })
                .await?;
            if page.is_empty() {
                break;
            }
            for e in page {
                let ev: Event = serde_json::from_str(&e)
                    .map_err(|e| ApiError::internal(format!("event log: {e}")))?;
                self.note(&ev);
                let cmds = self.machine.apply(ev);
                self.absorb(cmds, true);
                self.logged += 1;
            }
        }
        // Ask again for what runs; the agents attach or answer from their results.
        let running: Vec<TaskId> = self.runs.keys().copied().collect();
        for t in running {
            if self.machine.node_of(t).is_some() {
                self.start(t);
            } else {
                self.runs.remove(&t);
            }
        }
        Ok(())
    }

    /// Bookkeeping every event needs, in replay and live alike.
    fn note(&mut self, ev: &Event) {
        match ev {
            Event::NodeUp { node, slots } => {
                self.known.insert(node.clone(), (true, *slots));
            }
            Event::NodeLost { node } => {
                if let Some(k) = self.known.get_mut(node) {
                    k.0 = false;
                }
            }
            Event::Done { task, .. } | Event::Failed { task, .. } => {
                self.runs.remove(task);
            }
            _ => {}
        }
    }

    /// Take in the machine's commands: bookkeeping now, I/O later (never in replay).
    fn absorb(&mut self, cmds: Vec<Command>, replay: bool) {
        self.queued.set(self.machine.queued());
        for c in cmds {
            match &c {
                Command::Run {
                    task,
                    phase,
                    node,
                    input,
                } => {
                    let n = self.attempts.entry(*task).or_insert(0);
                    *n += 1;
                    self.started = true;
                    let key = format!("{}.{task}.{n}", self.row.id);
                    let data = match input {
                        TaskInput::Object { path, .. } => self.located.remove(path),
                        TaskInput::Reducer(_) => None,
                    };
                    self.runs.insert(
                        *task,
                        Run {
                            key,
                            node: node.clone(),
                            phase: *phase,
                            input: input.clone(),
                            data,
                            feeds: Vec::new(),
                            ended: false,
                            handed: 0,
                            end_handed: false,
                            feeder: None,
                        },
                    );
                }
                Command::Feed { task, path } => {
                    if let Some(r) = self.runs.get_mut(task) {
                        r.feeds.push(path.clone());
                    }
                }
                Command::EndFeed { task } => {
                    if let Some(r) = self.runs.get_mut(task) {
                        r.ended = true;
                    }
                }
                Command::Kill { .. } | Command::JobDone => {}
                Command::Error(rec) if !replay => {
                    self.err.push(crate::status::err_record(rec).to_string());
                    if let Some(i) = &rec.input {
                        self.fail.push(i.clone());
                    }
                }
                Command::Out(p) if !replay => self.out.push(p.clone()),
                Command::Error(_) | Command::Out(_) => {}
            }
            if !replay {
                self.todo.push(c);
            }
        }
    }

    /// Apply, log, act.
    async fn step(&mut self, events: Vec<Event>) -> Result<(), ApiError> {
        let mut logged = Vec::with_capacity(events.len());
        let mut objects = Vec::new();
        for ev in events {
            if let Event::Done { task, .. } = &ev {
                // The machine takes a report only from a running task; a late one's outputs
                // are never created (their data goes to the garbage).
                if let Some(o) = self.staged.remove(task) {
                    match self.machine.node_of(*task) {
                        Some(_) => {
                            for p in &o {
                                self.located.insert(p.path.clone(), p.data.clone());
                            }
                            objects.extend(o);
                        }
                        None => self.discard(o),
                    }
                }
            }
            logged.push(serde_json::to_string(&ev).map_err(ApiError::internal)?);
            self.note(&ev);
            let cmds = self.machine.apply(ev);
            self.absorb(cmds, false);
        }
        for p in &self.out {
            self.located.remove(p);
        }
        let append = JobAppend {
            id: self.row.id.clone(),
            expect_events: self.logged,
            events: logged,
            out: std::mem::take(&mut self.out),
            err: std::mem::take(&mut self.err),
            fail: std::mem::take(&mut self.fail),
            consumed: self.consumed,
            stats: serde_json::to_string(self.machine.stats()).map_err(ApiError::internal)?,
            state: if self.started { "running" } else { "queued" }.into(),
            done: None,
            objects,
        };
        let n = append.events.len() as u64;
        self.meta.job_log(append).await?;
        self.logged += n;
        for c in std::mem::take(&mut self.todo) {
            self.perform(c);
        }
        Ok(())
    }

    /// The machine is done: archive the record, then mark the job done.
    async fn finish(mut self) -> Result<(), ApiError> {
        let kills = async { while self.kills.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(5), kills).await;
        self.tasks.abort_all();
        let nodes = self.nodes.borrow().clone();
        super::archive::write(&self.meta, &self.store, &nodes, &self.row.id).await?;
        let append = JobAppend {
            id: self.row.id.clone(),
            expect_events: self.logged,
            consumed: self.consumed,
            stats: serde_json::to_string(self.machine.stats()).map_err(ApiError::internal)?,
            state: "done".into(),
            done: Some(mobula_metadata::api::now_ms()),
            ..Default::default()
        };
        self.meta.job_log(append).await
    }
}

/// A job's tasks waiting for a slot, counted into the process's `mobula_tasks_queued` gauge
/// (and taken out of it when the job's actor ends).
#[derive(Debug, Default)]
struct Queued(usize);

impl Queued {
    fn set(&mut self, n: usize) {
        let g = metrics::gauge!("mobula_tasks_queued");
        g.increment(n as f64 - self.0 as f64);
        self.0 = n;
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.set(0);
    }
}
