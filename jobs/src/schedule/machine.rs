//! [`Machine`]: the job's state and the rules of the module docs, event by event.

use std::collections::{BTreeMap, VecDeque};

use super::waiting::Waiting;

use super::{
    Command, ErrRecord, Event, Failure, Located, NodeId, Output, PhaseKind, PhaseShape, Stats,
    TaskId, TaskInput, MAX_RETRIES,
};

#[derive(Debug)]
struct Node {
    slots: u32,
    running: u32,
    up: bool,
    /// Map tasks of each phase that finished here and whose container (a task group on the
    /// node's agent) no task placed since has taken: likely idle, ready for the next task.
    idle_groups: BTreeMap<usize, u32>,
}

#[derive(Debug, PartialEq)]
enum State {
    Waiting,
    Running(NodeId),
    Finished,
}

#[derive(Debug)]
struct Task {
    phase: usize,
    input: TaskInput,
    p0input: Option<String>,
    tried: Vec<NodeId>,
    retries: u32,
    state: State,
    /// Reducers: everything fed so far (re-fed after a retry) and whether the feed has ended.
    fed: Vec<String>,
    fed_ended: bool,
}

/// One job's scheduling state.
#[derive(Debug)]
pub struct Machine {
    phases: Vec<PhaseShape>,
    nodes: BTreeMap<NodeId, Node>,
    tasks: BTreeMap<TaskId, Task>,
    /// Map tasks waiting for a slot, by arrival and by the nodes holding their input.
    queue: Waiting,
    /// Waiting map tasks whose input may have no live copy left (queued with a holder down, or
    /// held by a node just lost): checked at the next settle.
    recheck: Vec<TaskId>,
    /// Reducers waiting to be placed (they take no slot), oldest first.
    reducer_queue: VecDeque<TaskId>,
    /// Reducer task ids of each phase (empty for map phases).
    reducers: Vec<Vec<TaskId>>,
    next: TaskId,
    input_ended: bool,
    cancelled: bool,
    done: bool,
    stats: Stats,
    /// Waiting tasks examined by settling (for the test that settling stays linear).
    #[cfg(test)]
    pub(super) examined: u64,
}

impl Machine {
    /// A machine for a job of these phases; reducers are created (waiting) at once.
    pub fn new(phases: Vec<PhaseShape>) -> (Machine, Vec<Command>) {
        let stats = Stats {
            phases: vec![Default::default(); phases.len()],
            ..Default::default()
        };
        let mut m = Machine {
            reducers: vec![Vec::new(); phases.len()],
            phases,
            nodes: BTreeMap::new(),
            tasks: BTreeMap::new(),
            queue: Waiting::default(),
            recheck: Vec::new(),
            reducer_queue: VecDeque::new(),
            next: 0,
            input_ended: false,
            cancelled: false,
            done: false,
            stats,
            #[cfg(test)]
            examined: 0,
        };
        for p in 0..m.phases.len() {
            if m.phases[p].kind == PhaseKind::Reduce {
                for r in 0..m.phases[p].count.max(1) {
                    let id = m.add_task(p, TaskInput::Reducer(r), None);
                    m.reducers[p].push(id);
                }
            }
        }
        let mut out = Vec::new();
        m.settle(&mut out);
        (m, out)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Tasks waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.reducer_queue.len()
    }

    /// Queue task `id` (waiting) for a slot.
    fn enqueue(&mut self, id: TaskId) {
        match &self.tasks[&id].input {
            TaskInput::Reducer(_) => self.reducer_queue.push_back(id),
            TaskInput::Object { nodes, .. } => {
                self.queue.push(id, nodes);
                if self.unreachable(id) {
                    self.recheck.push(id);
                }
            }
        }
    }

    /// Whether every node holding a copy of task `id`'s input is known and down (it can never
    /// run while that lasts).
    fn unreachable(&self, id: TaskId) -> bool {
        match &self.tasks[&id].input {
            TaskInput::Object { nodes, .. } => {
                !nodes.is_empty()
                    && nodes
                        .iter()
                        .all(|n| self.nodes.get(n).is_some_and(|n| !n.up))
            }
            TaskInput::Reducer(_) => false,
        }
    }

    /// Whether every task has finished and the input has ended (or the job was cancelled).
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// Where a task runs now, if it does.
    pub fn node_of(&self, task: TaskId) -> Option<&NodeId> {
        match &self.tasks.get(&task)?.state {
            State::Running(n) => Some(n),
            _ => None,
        }
    }

    /// Apply one event; returns the commands it calls for, in order.
    pub fn apply(&mut self, ev: Event) -> Vec<Command> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match ev {
            Event::NodeUp { node, slots } => {
                let n = self.nodes.entry(node).or_insert(Node {
                    idle_groups: BTreeMap::new(),
                    slots,
                    running: 0,
                    up: true,
                });
                n.slots = slots;
                n.up = true;
            }
            Event::NodeLost { node } => {
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.up = false;
                }
                self.recheck.extend(self.queue.held_by(&node));
                let lost: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.state == State::Running(node.clone()))
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    let f = Failure {
                        internal: true,
                        code: "InternalError".into(),
                        message: format!("node {node} was lost"),
                        stderr: None,
                    };
                    self.failed(id, f, &mut out);
                }
            }
            Event::Input { path, at } => {
                if !self.input_ended && !self.cancelled {
                    self.input(path, at, &mut out);
                }
            }
            Event::EndInput => self.input_ended = true,
            Event::Cancel => self.cancel(&mut out),
            Event::Done { task, outputs } => self.finished(task, outputs, &mut out),
            Event::Failed { task, failure } => self.failed(task, failure, &mut out),
        }
        self.settle(&mut out);
        out
    }

    fn add_task(&mut self, phase: usize, input: TaskInput, p0input: Option<String>) -> TaskId {
        let id = self.next;
        self.next += 1;
        self.tasks.insert(
            id,
            Task {
                phase,
                input,
                p0input,
                tried: Vec::new(),
                retries: 0,
                state: State::Waiting,
                fed: Vec::new(),
                fed_ended: false,
            },
        );
        self.enqueue(id);
        self.stats.tasks += 1;
        self.stats.phases[phase].tasks += 1;
        id
    }

    fn error(&mut self, rec: ErrRecord, out: &mut Vec<Command>) {
        self.stats.errors += 1;
        out.push(Command::Error(rec));
    }

    /// Finish task `id` for good with an error record (cancelled, unrunnable, failed).
    fn give_up(&mut self, id: TaskId, f: Failure, out: &mut Vec<Command>) {
        let t = self.tasks.get_mut(&id).expect("task exists");
        t.state = State::Finished;
        self.stats.phases[t.phase].done += 1;
        let rec = ErrRecord {
            phase: t.phase,
            code: f.code,
            message: f.message,
            stderr: f.stderr,
            input: match &t.input {
                TaskInput::Object { path, .. } => Some(path.clone()),
                TaskInput::Reducer(_) => None,
            },
            p0input: t.p0input.clone(),
        };
        self.stats.tasks_done += 1;
        self.error(rec, out);
    }

    /// An object entering phase `phase` (a job input, or an earlier phase's output).
    fn route(&mut self, phase: usize, o: Output, p0: Option<String>, out: &mut Vec<Command>) {
        if phase == self.phases.len() {
            self.stats.outputs += 1;
            out.push(Command::Out(o.path));
            return;
        }
        match self.phases[phase].kind {
            PhaseKind::Map => {
                let p0 = p0.or_else(|| (phase == 0).then(|| o.path.clone()));
                let input = TaskInput::Object {
                    path: o.path,
                    nodes: o.nodes,
                };
                self.add_task(phase, input, p0);
            }
            PhaseKind::Reduce => {
                let count = self.reducers[phase].len() as u64;
                let r = o
                    .reducer
                    .map(u64::from)
                    .unwrap_or_else(|| super::fnv1a(o.path.as_bytes()) % count);
                let Some(&id) = self.reducers[phase].get(r as usize) else {
                    let rec = ErrRecord {
                        phase: phase.saturating_sub(1),
                        code: "UserTaskError".into(),
                        message: format!("reducer {r} does not exist (phase {phase} has {count})"),
                        stderr: None,
                        input: Some(o.path),
                        p0input: p0,
                    };
                    return self.error(rec, out);
                };
                let t = self.tasks.get_mut(&id).expect("reducer exists");
                if t.state == State::Finished {
                    return; // cancelled or failed reducer: its input goes nowhere
                }
                t.fed.push(o.path.clone());
                if matches!(t.state, State::Running(_)) {
                    out.push(Command::Feed {
                        task: id,
                        path: o.path,
                    });
                }
            }
        }
    }

    fn input(&mut self, path: String, at: Located, out: &mut Vec<Command>) {
        match at {
            Located::Missing | Located::Directory => {
                let message = if at == Located::Directory {
                    format!("{path} is a directory, not an object")
                } else {
                    format!("{path} does not exist")
                };
                let rec = ErrRecord {
                    phase: 0,
                    code: "ResourceNotFoundError".into(),
                    message,
                    stderr: None,
                    input: Some(path.clone()),
                    p0input: Some(path),
                };
                self.error(rec, out);
            }
            Located::Object { size, nodes } => {
                let nodes = if size == 0 { Vec::new() } else { nodes };
                let o = Output {
                    path,
                    nodes,
                    reducer: None,
                };
                self.route(0, o, None, out);
            }
        }
    }

    fn release(&mut self, id: TaskId) -> Option<NodeId> {
        let t = self.tasks.get_mut(&id)?;
        // Only a running task is released: a late report for a task waiting to be retried
        // (or long finished) changes nothing.
        let State::Running(node) = &t.state else {
            return None;
        };
        let node = node.clone();
        t.state = State::Finished;
        if matches!(t.input, TaskInput::Reducer(_)) {
            return Some(node);
        }
        if let Some(n) = self.nodes.get_mut(&node) {
            n.running = n.running.saturating_sub(1);
        }
        Some(node)
    }

    fn finished(&mut self, id: TaskId, outputs: Vec<Output>, out: &mut Vec<Command>) {
        let Some(node) = self.release(id) else {
            return; // not running (a late report after a retry or a cancel)
        };
        self.stats.tasks_done += 1;
        let (phase, p0, map) = {
            let t = &self.tasks[&id];
            let map = matches!(t.input, TaskInput::Object { .. });
            (t.phase, t.p0input.clone(), map)
        };
        if let Some(n) = self.nodes.get_mut(&node).filter(|_| map) {
            *n.idle_groups.entry(phase).or_default() += 1;
        }
        self.stats.phases[phase].done += 1;
        for o in outputs {
            self.route(phase + 1, o, p0.clone(), out);
        }
    }

    fn failed(&mut self, id: TaskId, f: Failure, out: &mut Vec<Command>) {
        let Some(node) = self.release(id) else {
            return;
        };
        let t = self.tasks.get_mut(&id).expect("task exists");
        t.tried.push(node);
        if f.internal && t.retries < MAX_RETRIES && !self.cancelled {
            t.retries += 1;
            t.state = State::Waiting;
            self.stats.retries += 1;
            self.enqueue(id);
            return;
        }
        self.give_up(id, f, out);
    }

    fn cancel(&mut self, out: &mut Vec<Command>) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        self.input_ended = true;
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let t = &self.tasks[&id];
            if t.state == State::Finished {
                continue;
            }
            if matches!(t.state, State::Running(_)) {
                out.push(Command::Kill { task: id });
                self.release(id);
            }
            let f = Failure {
                internal: false,
                code: "JobCancelledError".into(),
                message: "job was cancelled".into(),
                stderr: None,
            };
            self.give_up(id, f, out);
        }
        self.queue.clear();
        self.recheck.clear();
        self.reducer_queue.clear();
    }

    /// Will phase `p` get no more input (the job's input ended, or phase `p - 1` is done)?
    fn input_complete(&self, p: usize) -> bool {
        if p == 0 {
            self.input_ended
        } else {
            self.phase_done(p - 1)
        }
    }

    /// Is phase `p` complete (no more input will come, every task of it finished)?
    fn phase_done(&self, p: usize) -> bool {
        // Every task is counted once when created and once when it finishes for good.
        let s = &self.stats.phases[p];
        self.input_complete(p) && s.done == s.tasks
    }

    /// Pick the node for a task: live, a free slot, holding its input if it has copies, not
    /// tried before when possible; a node with an idle container of the task's phase first
    /// (a map task there skips a container's start), then least loaded, then by name.
    fn place(&self, t: &Task) -> Option<NodeId> {
        let (holders, reducer): (&[NodeId], bool) = match &t.input {
            TaskInput::Object { nodes, .. } => (nodes, false),
            TaskInput::Reducer(_) => (&[], true),
        };
        // Reducers take no slot: they mostly wait on their input, and a reducer holding the
        // last slot while the tasks feeding it queue would never finish.
        let ok = |(id, n): &(&NodeId, &Node)| {
            n.up && (reducer || n.running < n.slots) && (holders.is_empty() || holders.contains(id))
        };
        let free: Vec<(&NodeId, &Node)> = self.nodes.iter().filter(ok).collect();
        let fresh = free.iter().filter(|(id, _)| !t.tried.contains(id));
        let pick = |it: &mut dyn Iterator<Item = &(&NodeId, &Node)>| {
            it.min_by_key(|(id, n)| {
                let idle = !reducer && n.idle_groups.get(&t.phase).is_some_and(|&k| k > 0);
                (!idle, n.running * 1000 / n.slots.max(1), (*id).clone())
            })
            .map(|(id, _)| (*id).clone())
        };
        pick(&mut fresh.into_iter()).or_else(|| pick(&mut free.iter()))
    }

    /// Every live node's slots are taken, and some task runs (whose report settles again).
    fn slots_full(&self) -> bool {
        let up = || self.nodes.values().filter(|n| n.up);
        up().all(|n| n.running >= n.slots) && up().any(|n| n.running > 0)
    }

    /// Dispatch what can run, end reducers' input, and finish the job when everything is.
    fn settle(&mut self, out: &mut Vec<Command>) {
        // Reducers take no slot: each waiting one is tried on every settle (a job has few).
        let mut waiting = VecDeque::new();
        while let Some(id) = self.reducer_queue.pop_front() {
            if !self.try_start(id, out) {
                waiting.push_back(id);
            }
        }
        self.reducer_queue = waiting;
        // A waiting task none of whose holders is live any more fails (try_start gives it up).
        for id in std::mem::take(&mut self.recheck) {
            if self.tasks[&id].state == State::Waiting && self.unreachable(id) {
                self.try_start(id, out);
                self.queue.remove(id);
            }
        }
        // Map tasks start in arrival order, each on a node with a free slot holding its input:
        // the oldest waiting task that a free node holds goes next, found through the index
        // of waiting tasks by holder, not by walking the queue — with thousands queued, a walk
        // on every event made settling quadratic (all slots taken, or a free node holding none
        // of them).
        while !self.slots_full() {
            let free = self
                .nodes
                .iter()
                .filter(|(_, n)| n.up && n.running < n.slots)
                .map(|(id, _)| id);
            let Some(id) = self.queue.oldest_for(free) else {
                break;
            };
            if !self.try_start(id, out) {
                break; // cannot be: a free node holds it (or it needs no copy)
            }
            self.queue.remove(id);
        }
        for p in 0..self.phases.len() {
            if self.phases[p].kind != PhaseKind::Reduce || !self.input_complete(p) {
                continue;
            }
            for &id in &self.reducers[p] {
                let t = self.tasks.get_mut(&id).expect("reducer exists");
                if matches!(t.state, State::Running(_)) && !t.fed_ended {
                    t.fed_ended = true;
                    out.push(Command::EndFeed { task: id });
                }
            }
        }
        if !self.done && (self.cancelled || self.phase_done(self.phases.len().saturating_sub(1))) {
            self.done = true;
            out.push(Command::JobDone);
        }
    }

    /// Start waiting task `id` on a node if one can take it now (or give it up when no live
    /// node holds its input); false when it must wait. A task no longer waiting is dropped.
    fn try_start(&mut self, id: TaskId, out: &mut Vec<Command>) -> bool {
        #[cfg(test)]
        {
            self.examined += 1;
        }
        let t = &self.tasks[&id];
        if t.state != State::Waiting {
            return true;
        }
        let reducer = matches!(t.input, TaskInput::Reducer(_));
        // A task whose copies all sit on lost nodes can never run: fail it internally.
        if let TaskInput::Object { .. } = &t.input {
            if self.unreachable(id) {
                let f = Failure {
                    internal: true,
                    code: "InternalError".into(),
                    message: "no live node holds a copy of the input".into(),
                    stderr: None,
                };
                self.give_up(id, f, out);
                return true;
            }
        }
        let Some(node) = self.place(t) else {
            return false;
        };
        if !reducer {
            let n = self.nodes.get_mut(&node).expect("placed on a known node");
            n.running += 1;
            if let Some(k) = n.idle_groups.get_mut(&t.phase) {
                *k = k.saturating_sub(1);
            }
        }
        let t = self.tasks.get_mut(&id).expect("task exists");
        t.state = State::Running(node.clone());
        out.push(Command::Run {
            task: id,
            phase: t.phase,
            node,
            input: t.input.clone(),
        });
        for path in &t.fed {
            out.push(Command::Feed {
                task: id,
                path: path.clone(),
            });
        }
        t.fed_ended = false;
        true
    }
}
