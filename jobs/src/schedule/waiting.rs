//! [`Waiting`]: the map tasks waiting for a slot, in arrival order and by the nodes holding a
//! copy of their input.
//!
//! Settling asks one question of it: the oldest waiting task that some node with a free slot
//! holds (or that needs no copy). With the tasks indexed by holder, that is the oldest of one
//! entry per free node — not a walk of the queue, which made every event cost the whole queue
//! whenever a node with a free slot held none of it (the last inputs of a big job all on other
//! nodes, a node that joined after the job's inputs were written).
//!
//! Invariants: a task is in `order` exactly when it is in `by_node` under each of its holders
//! (or in `anywhere` when it has none), under the same sequence number; sequence numbers only
//! grow, so a task queued again (a retry) goes last, as a queue's `push_back` would.

use std::collections::{BTreeMap, HashMap};

use super::{NodeId, TaskId};

#[derive(Debug, Default)]
pub(super) struct Waiting {
    next: u64,
    /// Every waiting task by arrival: sequence number → (task, its holders).
    order: BTreeMap<u64, (TaskId, Vec<NodeId>)>,
    /// Each task's sequence number.
    seq: HashMap<TaskId, u64>,
    /// Waiting tasks by a node holding a copy of their input, oldest first.
    by_node: HashMap<NodeId, BTreeMap<u64, TaskId>>,
    /// Waiting tasks whose input has no copy (an empty object): any node takes them.
    anywhere: BTreeMap<u64, TaskId>,
}

impl Waiting {
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Queue `task`, held by `holders`, after every task queued so far (a task already
    /// waiting is left where it is).
    pub fn push(&mut self, task: TaskId, holders: &[NodeId]) {
        if self.seq.contains_key(&task) {
            return;
        }
        let s = self.next;
        self.next += 1;
        self.seq.insert(task, s);
        if holders.is_empty() {
            self.anywhere.insert(s, task);
        }
        for n in holders {
            self.by_node.entry(n.clone()).or_default().insert(s, task);
        }
        self.order.insert(s, (task, holders.to_vec()));
    }

    /// Take `task` out (it runs, or finished without running).
    pub fn remove(&mut self, task: TaskId) {
        let Some(s) = self.seq.remove(&task) else {
            return;
        };
        let Some((_, holders)) = self.order.remove(&s) else {
            return;
        };
        self.anywhere.remove(&s);
        for n in &holders {
            if let Some(q) = self.by_node.get_mut(n) {
                q.remove(&s);
                if q.is_empty() {
                    self.by_node.remove(n);
                }
            }
        }
    }

    /// The oldest waiting task held by one of `free` (nodes that can take a task now), or
    /// needing no copy.
    pub fn oldest_for<'a>(&self, free: impl Iterator<Item = &'a NodeId>) -> Option<TaskId> {
        free.filter_map(|n| self.by_node.get(n)?.first_key_value())
            .chain(self.anywhere.first_key_value())
            .min_by_key(|(s, _)| **s)
            .map(|(_, t)| *t)
    }

    /// The waiting tasks that `node` holds a copy for, oldest first.
    pub fn held_by(&self, node: &NodeId) -> Vec<TaskId> {
        self.by_node
            .get(node)
            .map(|q| q.values().copied().collect())
            .unwrap_or_default()
    }

    pub fn clear(&mut self) {
        *self = Waiting {
            next: self.next,
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_oldest_task_a_free_node_holds_comes_first_and_a_retry_goes_last() {
        let mut w = Waiting::default();
        w.push(1, &ids(&["a", "b"]));
        w.push(2, &ids(&["c"]));
        w.push(3, &ids(&[]));
        w.push(4, &ids(&["c", "a"]));
        let c = ids(&["c"]);
        assert_eq!(w.oldest_for(c.iter()), Some(2));
        let b = ids(&["b"]);
        assert_eq!(w.oldest_for(b.iter()), Some(1));
        let none: Vec<NodeId> = Vec::new();
        assert_eq!(w.oldest_for(none.iter()), Some(3), "no copy: any node");
        w.remove(2);
        assert_eq!(w.oldest_for(c.iter()), Some(3));
        w.remove(3);
        assert_eq!(w.oldest_for(c.iter()), Some(4));
        assert_eq!(w.held_by(&"a".to_string()), vec![1, 4]);
        // Queued again (a retry): behind everything.
        w.remove(1);
        w.push(1, &ids(&["a"]));
        assert_eq!(w.held_by(&"a".to_string()), vec![4, 1]);
        w.push(1, &ids(&["a"]));
        assert_eq!(w.len(), 2, "a waiting task is queued once");
        w.clear();
        assert_eq!((w.len(), w.oldest_for(ids(&["a", "c"]).iter())), (0, None));
        assert!(w.by_node.is_empty() && w.seq.is_empty());
    }
}
