//! The scheduling core driven by a simulated cluster: fixed scenarios for each rule, then
//! thousands of random interleavings checked against the invariants after every event.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn map() -> PhaseShape {
    PhaseShape {
        kind: PhaseKind::Map,
        count: 0,
    }
}

fn reduce(count: u32) -> PhaseShape {
    PhaseShape {
        kind: PhaseKind::Reduce,
        count,
    }
}

/// A simulated cluster around a machine, checking invariants on every command.
struct Sim {
    m: Machine,
    slots: BTreeMap<NodeId, u32>,
    down: BTreeSet<NodeId>,
    /// Running tasks: id → (node, phase, input).
    running: BTreeMap<TaskId, (NodeId, usize, TaskInput)>,
    fed: BTreeMap<TaskId, Vec<String>>,
    ended: BTreeSet<TaskId>,
    outs: Vec<String>,
    errs: Vec<ErrRecord>,
    runs: Vec<(TaskId, NodeId, TaskInput)>,
    done: u32,
}

impl Sim {
    fn new(phases: Vec<PhaseShape>, nodes: &[(&str, u32)]) -> Sim {
        let (m, cmds) = Machine::new(phases);
        let mut s = Sim {
            m,
            slots: BTreeMap::new(),
            down: BTreeSet::new(),
            running: BTreeMap::new(),
            fed: BTreeMap::new(),
            ended: BTreeSet::new(),
            outs: Vec::new(),
            errs: Vec::new(),
            runs: Vec::new(),
            done: 0,
        };
        s.take(cmds);
        for (n, k) in nodes {
            s.ev(Event::NodeUp {
                node: n.to_string(),
                slots: *k,
            });
        }
        s
    }

    fn ev(&mut self, e: Event) {
        match &e {
            Event::NodeUp { node, slots } => {
                self.slots.insert(node.clone(), *slots);
                self.down.remove(node);
            }
            Event::NodeLost { node } => {
                self.down.insert(node.clone());
                self.running.retain(|_, (n, _, _)| n != node);
            }
            Event::Done { task, .. } | Event::Failed { task, .. } => {
                self.running.remove(task);
            }
            _ => {}
        }
        let cmds = self.m.apply(e);
        self.take(cmds);
    }

    fn take(&mut self, cmds: Vec<Command>) {
        for c in cmds {
            assert_eq!(self.done, 0, "no command after JobDone: {c:?}");
            match c {
                Command::Run {
                    task,
                    phase,
                    node,
                    input,
                } => {
                    assert!(!self.down.contains(&node), "ran on a lost node");
                    if let TaskInput::Object { nodes, .. } = &input {
                        assert!(nodes.is_empty() || nodes.contains(&node), "not on a holder");
                        let busy = self
                            .running
                            .values()
                            .filter(|(n, _, i)| *n == node && !matches!(i, TaskInput::Reducer(_)))
                            .count() as u32;
                        assert!(busy < self.slots[&node], "slots exceeded on {node}");
                    }
                    assert!(self
                        .running
                        .insert(task, (node.clone(), phase, input.clone()))
                        .is_none());
                    self.fed.insert(task, Vec::new());
                    self.ended.remove(&task);
                    self.runs.push((task, node, input));
                }
                Command::Feed { task, path } => {
                    assert!(self.running.contains_key(&task), "fed a task not running");
                    assert!(!self.ended.contains(&task), "fed after EndFeed");
                    self.fed.get_mut(&task).unwrap().push(path);
                }
                Command::EndFeed { task } => {
                    assert!(self.running.contains_key(&task));
                    assert!(self.ended.insert(task), "EndFeed twice");
                }
                Command::Kill { task } => {
                    assert!(
                        self.running.remove(&task).is_some(),
                        "killed a task not running"
                    );
                }
                Command::Error(e) => self.errs.push(e),
                Command::Out(p) => self.outs.push(p),
                Command::JobDone => {
                    assert!(self.running.is_empty(), "done while tasks run");
                    self.done += 1;
                }
            }
        }
    }

    fn input(&mut self, path: &str, nodes: &[&str]) {
        self.ev(Event::Input {
            path: path.into(),
            at: Located::Object {
                size: 10,
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
            },
        });
    }

    /// Finish task `id` like a deterministic program: a map emits `<input>.<phase>` (routed by
    /// `route`), a reducer (once its input ended) emits `r<phase>.<n>:<count fed>`.
    fn complete(&mut self, id: TaskId, route: impl Fn(&str) -> Option<u32>) -> bool {
        let Some((node, phase, input)) = self.running.get(&id).cloned() else {
            return false;
        };
        let path = match input {
            TaskInput::Object { path, .. } => format!("{path}.{phase}"),
            TaskInput::Reducer(n) => {
                if !self.ended.contains(&id) {
                    return false;
                }
                format!("r{phase}.{n}:{}", self.fed[&id].len())
            }
        };
        let reducer = route(&path);
        let outputs = vec![Output {
            path,
            nodes: vec![node],
            reducer,
        }];
        self.ev(Event::Done { task: id, outputs });
        true
    }

    /// Complete whatever can be completed until nothing changes.
    fn drain(&mut self, route: impl Fn(&str) -> Option<u32> + Copy) {
        loop {
            let ids: Vec<TaskId> = self.running.keys().copied().collect();
            let mut progressed = false;
            for id in ids {
                progressed |= self.complete(id, route);
            }
            if !progressed {
                return;
            }
        }
    }
}

fn nodes3() -> Vec<(&'static str, u32)> {
    vec![("a", 2), ("b", 2), ("c", 2)]
}

#[test]
fn map_reduce_word_count_shape() {
    let mut s = Sim::new(vec![map(), reduce(1)], &nodes3());
    for i in 0..20 {
        let holders = [["a", "b"], ["b", "c"], ["c", "a"]][i % 3];
        s.input(&format!("/u/stor/in{i}"), &holders);
    }
    s.ev(Event::EndInput);
    s.drain(|_| None);
    assert_eq!(s.done, 1);
    assert_eq!(
        s.outs,
        vec!["r1.0:20".to_string()],
        "one reducer saw all 20 map outputs"
    );
    assert!(s.errs.is_empty());
    let st = s.m.stats();
    assert_eq!((st.tasks, st.tasks_done, st.outputs), (21, 21, 1));
}

#[test]
fn missing_input_is_an_error_and_the_job_still_ends() {
    let mut s = Sim::new(vec![map()], &nodes3());
    s.ev(Event::Input {
        path: "/u/stor/nope".into(),
        at: Located::Missing,
    });
    s.ev(Event::EndInput);
    assert_eq!(s.errs[0].code, "ResourceNotFoundError");
    assert_eq!(s.errs[0].input.as_deref(), Some("/u/stor/nope"));
    assert_eq!((s.done, s.runs.len()), (1, 0));
}

#[test]
fn user_failures_are_final_internal_ones_retried_twice_on_other_nodes() {
    let mut s = Sim::new(vec![map()], &nodes3());
    s.input("/u/stor/x", &["a", "b", "c"]);
    s.input("/u/stor/y", &["a", "b", "c"]);
    s.ev(Event::EndInput);
    let fail = |internal| Failure {
        internal,
        code: if internal {
            "InternalError"
        } else {
            "UserTaskError"
        }
        .into(),
        message: "boom".into(),
        stderr: Some("/u/jobs/j/stor/x.err".into()),
    };
    s.ev(Event::Failed {
        task: 1,
        failure: fail(false),
    });
    assert_eq!(s.errs.len(), 1);
    assert_eq!(
        s.runs.iter().filter(|r| r.0 == 1).count(),
        1,
        "never retried"
    );
    for _ in 0..3 {
        s.ev(Event::Failed {
            task: 0,
            failure: fail(true),
        });
    }
    let nodes: Vec<&str> = s
        .runs
        .iter()
        .filter(|r| r.0 == 0)
        .map(|r| r.1.as_str())
        .collect();
    assert_eq!(nodes.len(), 3, "first run + 2 retries");
    let distinct: BTreeSet<_> = nodes.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each retry on a node not tried before: {nodes:?}"
    );
    assert_eq!(s.errs[1].code, "InternalError");
    assert_eq!(s.m.stats().retries, 2);
    assert_eq!(s.done, 1);
}

#[test]
fn a_lost_node_reruns_its_tasks_on_the_other_copy() {
    let mut s = Sim::new(vec![map(), reduce(1)], &[("a", 4), ("b", 4)]);
    for i in 0..6 {
        s.input(&format!("/u/stor/in{i}"), &["a", "b"]);
    }
    s.ev(Event::EndInput);
    let on_a: Vec<TaskId> = s
        .running
        .iter()
        .filter(|(_, v)| v.0 == "a")
        .map(|(k, _)| *k)
        .collect();
    assert!(!on_a.is_empty());
    s.ev(Event::NodeLost { node: "a".into() });
    s.drain(|_| None);
    for id in &on_a {
        let last = s
            .runs
            .iter()
            .rev()
            .find(|r| r.0 == *id)
            .map(|r| r.1.as_str());
        assert_eq!(last, Some("b"), "task {id} reran on b");
    }
    assert_eq!(
        s.outs,
        vec!["r1.0:6".to_string()],
        "the output is still exactly right"
    );
    assert!(s.errs.is_empty());
}

#[test]
fn slots_bound_what_runs_and_the_rest_waits_in_order() {
    let mut s = Sim::new(vec![map()], &[("a", 2)]);
    for i in 0..10 {
        s.input(&format!("/u/stor/in{i}"), &["a"]);
    }
    assert_eq!(s.running.len(), 2);
    s.ev(Event::EndInput);
    s.drain(|_| None);
    let order: Vec<TaskId> = s.runs.iter().map(|r| r.0).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "arrival order");
    assert_eq!((s.outs.len(), s.done), (10, 1));
}

#[test]
fn settling_with_every_slot_taken_leaves_the_queue_unwalked() {
    // 5,000 inputs queued behind 2 slots (and a reducer): each task's end examines the task that
    // takes its slot (and the reducer, until it runs), not the thousands behind it.
    let mut s = Sim::new(vec![map(), reduce(1)], &[("a", 2)]);
    for i in 0..5000 {
        s.input(&format!("/u/stor/in{i}"), &["a"]);
    }
    assert_eq!(s.m.queued(), 4998);
    let before = s.m.examined;
    for _ in 0..100 {
        let id = *s.running.keys().find(|&&t| t != 0).unwrap();
        assert!(s.complete(id, |_| Some(0)));
    }
    let per_event = (s.m.examined - before) as f64 / 100.0;
    assert!(per_event <= 3.0, "{per_event} tasks examined per settle");
    s.ev(Event::EndInput);
    s.drain(|_| Some(0));
    assert_eq!((s.outs.len(), s.done), (1, 1));
}

#[test]
fn a_free_node_holding_none_of_the_queue_leaves_it_unwalked() {
    // 5,000 inputs on a and b only, c free all along: each task's end examines the task that
    // takes its slot, not the thousands that c cannot take. Then one input c holds, queued
    // last, starts there at once — ahead of the older ones waiting for a and b.
    let mut s = Sim::new(vec![map()], &nodes3());
    for i in 0..5000 {
        s.input(&format!("/u/stor/in{i}"), &["a", "b"]);
    }
    assert_eq!(s.m.queued(), 4996);
    let before = s.m.examined;
    for _ in 0..100 {
        let id = *s.running.keys().next().unwrap();
        assert!(s.complete(id, |_| None));
    }
    let per_event = (s.m.examined - before) as f64 / 100.0;
    assert!(per_event <= 2.0, "{per_event} tasks examined per settle");
    s.input("/u/stor/on-c", &["c"]);
    let last = s.runs.last().unwrap();
    assert_eq!((last.0, last.1.as_str()), (5000, "c"));
    // The rest still run in arrival order.
    let order: Vec<TaskId> = s.runs.iter().map(|r| r.0).filter(|&t| t != 5000).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "arrival order");
    s.ev(Event::EndInput);
    s.drain(|_| None);
    assert_eq!((s.outs.len(), s.done), (5001, 1));
}

#[test]
fn a_waiting_task_fails_once_no_live_node_holds_its_input() {
    // Queued behind full slots, held by b only: when b is lost it fails at once (not when the
    // queue reaches it), and the rest keep their order.
    let mut s = Sim::new(vec![map()], &[("a", 1), ("b", 1)]);
    s.input("/u/stor/x", &["a"]);
    s.input("/u/stor/y", &["b"]);
    s.input("/u/stor/z", &["b"]);
    s.input("/u/stor/w", &["a", "b"]);
    assert_eq!(s.m.queued(), 2);
    s.ev(Event::NodeLost { node: "b".into() });
    let lost: Vec<_> = s.errs.iter().filter_map(|e| e.input.clone()).collect();
    assert!(
        lost.contains(&"/u/stor/z".to_string()),
        "z failed at once: {lost:?}"
    );
    assert_eq!(s.m.queued(), 1, "w waits for a");
    s.ev(Event::EndInput);
    s.drain(|_| None);
    assert_eq!(s.done, 1);
    assert_eq!(s.outs, ["/u/stor/x.0", "/u/stor/w.0"]);
    let mut failed: Vec<_> = s
        .errs
        .iter()
        .map(|e| (e.input.clone().unwrap(), e.message.as_str()))
        .collect();
    failed.sort();
    let why = "no live node holds a copy of the input";
    assert_eq!(
        failed,
        [("/u/stor/y".into(), why), ("/u/stor/z".into(), why)]
    );
}

#[test]
fn cancel_kills_running_tasks_and_ends_the_job() {
    let mut s = Sim::new(vec![map(), reduce(2)], &nodes3());
    for i in 0..10 {
        s.input(&format!("/u/stor/in{i}"), &["a"]);
    }
    s.ev(Event::Cancel);
    assert!(s.running.is_empty(), "everything killed");
    assert_eq!(s.done, 1);
    assert!(s.errs.iter().all(|e| e.code == "JobCancelledError"));
    s.input("/u/stor/late", &["a"]);
    assert_eq!(s.done, 1);
}

#[test]
fn map_map_reduce_with_two_reducers_routed_by_index() {
    let mut s = Sim::new(vec![map(), map(), reduce(2)], &nodes3());
    for i in 0..8 {
        s.input(&format!("/u/stor/in{i}"), &["a", "b"]);
    }
    s.ev(Event::EndInput);
    // Phase-1 outputs go to reducer (digit of the input) % 2, like `msplit` would.
    s.drain(|p| {
        p.strip_suffix(".1")
            .and_then(|p| p.strip_suffix(".0"))
            .and_then(|p| p.chars().last()?.to_digit(10))
            .map(|d| d % 2)
    });
    let mut outs = s.outs.clone();
    outs.sort();
    assert_eq!(outs, vec!["r2.0:4".to_string(), "r2.1:4".to_string()]);
    assert_eq!(s.m.stats().tasks, 8 + 8 + 2);
}

#[test]
fn a_reduce_only_job_feeds_its_input_and_ends_it_with_the_input() {
    let mut s = Sim::new(vec![reduce(1)], &nodes3());
    s.input("/u/stor/a", &["a"]);
    s.input("/u/stor/b", &["c"]);
    assert!(s.ended.is_empty());
    s.ev(Event::EndInput);
    s.drain(|_| None);
    assert_eq!(s.outs, vec!["r0.0:2".to_string()]);
}

#[test]
fn zero_byte_inputs_run_anywhere_and_bad_reducer_indexes_are_errors() {
    let mut s = Sim::new(vec![map(), reduce(1)], &[("a", 1)]);
    s.ev(Event::Input {
        path: "/u/stor/empty".into(),
        at: Located::Object {
            size: 0,
            nodes: vec!["gone".into()],
        },
    });
    s.ev(Event::EndInput);
    assert_eq!(s.runs.last().map(|r| r.1.as_str()), Some("a"));
    s.drain(|p| p.ends_with(".0").then_some(7));
    assert!(s.errs.iter().any(|e| e.message.contains("reducer 7")));
    assert_eq!(s.done, 1);
}

/// xorshift64*: a fixed-seed generator, so every failing seed can be replayed.
fn rnd(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_interleavings_keep_every_invariant_and_always_finish() {
    for seed in 1..=3000u64 {
        let mut r = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let shapes = [
            vec![map()],
            vec![map(), reduce(1)],
            vec![map(), map(), reduce(3)],
            vec![reduce(2), map()],
        ];
        let phases = shapes[(rnd(&mut r) % 4) as usize].clone();
        let names = ["a", "b", "c", "d"];
        let nodes: Vec<(&str, u32)> = names
            .iter()
            .map(|n| (*n, 1 + (rnd(&mut r) % 3) as u32))
            .collect();
        let mut s = Sim::new(phases, &nodes);
        let (mut inputs, total) = (0u64, 1 + rnd(&mut r) % 12);
        for _step in 0..400 {
            if s.done > 0 {
                break;
            }
            match rnd(&mut r) % 10 {
                0 | 1 if inputs < total => {
                    let a = names[(rnd(&mut r) % 4) as usize];
                    let b = names[(rnd(&mut r) % 4) as usize];
                    s.input(&format!("/u/stor/i{inputs}"), &[a, b]);
                    inputs += 1;
                }
                2 if inputs >= total => s.ev(Event::EndInput),
                3 => {
                    if let Some(&id) = s.running.keys().nth((rnd(&mut r) % 4) as usize) {
                        let internal = rnd(&mut r).is_multiple_of(2);
                        let failure = Failure {
                            internal,
                            code: "X".into(),
                            message: "x".into(),
                            stderr: None,
                        };
                        s.ev(Event::Failed { task: id, failure });
                    }
                }
                4 if rnd(&mut r).is_multiple_of(8) => {
                    let n = names[(rnd(&mut r) % 4) as usize];
                    s.ev(Event::NodeLost { node: n.into() });
                }
                5 => {
                    let n = names[(rnd(&mut r) % 4) as usize];
                    s.ev(Event::NodeUp {
                        node: n.into(),
                        slots: 2,
                    });
                }
                6 if rnd(&mut r).is_multiple_of(50) => s.ev(Event::Cancel),
                _ => {
                    if let Some(&id) = s.running.keys().nth((rnd(&mut r) % 3) as usize) {
                        let k = rnd(&mut r) % 4;
                        s.complete(id, |_| Some(k as u32 % 2));
                    }
                }
            }
        }
        // Bring every node back, end the input, let everything finish.
        for n in names {
            s.ev(Event::NodeUp {
                node: n.into(),
                slots: 2,
            });
        }
        s.ev(Event::EndInput);
        for _ in 0..100 {
            s.drain(|_| Some(0));
            if s.done > 0 {
                break;
            }
        }
        assert_eq!(s.done, 1, "seed {seed}: the job finishes exactly once");
        let st = s.m.stats().clone();
        assert_eq!(st.tasks, st.tasks_done, "seed {seed}: every task finished");
        let per_phase: (u64, u64) = st
            .phases
            .iter()
            .fold((0, 0), |a, p| (a.0 + p.tasks, a.1 + p.done));
        assert_eq!(
            per_phase,
            (st.tasks, st.tasks_done),
            "seed {seed}: phase counts add up"
        );
        assert!(s.running.is_empty(), "seed {seed}");
        assert!(st.retries <= st.tasks * MAX_RETRIES as u64);
    }
}

#[test]
fn a_late_report_for_a_task_waiting_to_retry_changes_nothing() {
    let (mut m, _) = Machine::new(vec![map()]);
    m.apply(Event::NodeUp {
        node: "a".into(),
        slots: 1,
    });
    m.apply(Event::NodeUp {
        node: "b".into(),
        slots: 1,
    });
    let at = Located::Object {
        size: 1,
        nodes: vec!["a".into(), "b".into()],
    };
    m.apply(Event::Input {
        path: "/x/stor/1".into(),
        at: at.clone(),
    });
    m.apply(Event::Input {
        path: "/x/stor/2".into(),
        at,
    });
    m.apply(Event::EndInput);
    // Both run; a is lost: its task waits for b's slot.
    let lost = (0..2)
        .find(|t| m.node_of(*t).map(String::as_str) == Some("a"))
        .unwrap();
    m.apply(Event::NodeLost { node: "a".into() });
    assert!(m.node_of(lost).is_none());
    // The lost run's own report arrives late: it must not finish the waiting task.
    let f = Failure {
        internal: true,
        code: "InternalError".into(),
        message: "x".into(),
        stderr: None,
    };
    m.apply(Event::Failed {
        task: lost,
        failure: f,
    });
    assert!(!m.is_done());
    let other = 1 - lost;
    let cmds = m.apply(Event::Done {
        task: other,
        outputs: vec![],
    });
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::Run { task, node, .. } if *task == lost && node == "b")),
        "{cmds:?}"
    );
    assert!(!m.is_done());
    let cmds = m.apply(Event::Done {
        task: lost,
        outputs: vec![],
    });
    assert!(cmds.contains(&Command::JobDone));
    assert_eq!(m.stats().tasks_done, 2);
}

#[test]
fn a_node_with_an_idle_container_of_the_phase_is_preferred() {
    let mut s = Sim::new(vec![map()], &[("a", 2), ("b", 2)]);
    // A task of the phase ran on b (only b held its input) and finished: b likely keeps its
    // container idle for a moment.
    s.input("/u/stor/y0", &["b"]);
    let id = *s.running.keys().next().unwrap();
    s.complete(id, |_| None);
    // The next task held by both goes to b, though a comes first by name at equal load.
    s.input("/u/stor/y1", &["a", "b"]);
    let next = *s.running.keys().next().unwrap();
    assert_eq!(s.running[&next].0, "b", "b's idle container beats a's name");
    // That container is now taken: the one after goes by load (a is idle, b runs one).
    s.input("/u/stor/y2", &["a", "b"]);
    let on_a = s.running.values().filter(|(n, _, _)| n == "a").count();
    assert_eq!(on_a, 1, "{:?}", s.running);
}
