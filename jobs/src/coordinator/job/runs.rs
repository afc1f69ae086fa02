//! Acting on a job's commands once they are logged: starting (or re-attaching to) task runs on
//! the nodes' agents with a long poll each, handing reducers their feed in order, killing.

use std::collections::BTreeMap;
use std::time::Duration;

use mobula_metadata::api::{Data, Garbage, PutObject};

use tokio::sync::mpsc;

use super::Actor;
use crate::api::{Feed, Key, TaskRequest, TaskResult};
use crate::schedule::{Command, Failure, TaskId, TaskInput};

/// What a reducer's feeder is handed: paths in order, the data of those known, and the end.
pub(super) type FeedBatch = (Vec<String>, BTreeMap<String, Data>, bool);

impl Actor {
    fn url(&self, node: &str) -> Option<String> {
        self.nodes
            .borrow()
            .iter()
            .find(|n| n.id == node)
            .map(|n| n.url.clone())
    }

    pub(super) fn perform(&mut self, c: Command) {
        match c {
            Command::Run { task, .. } => self.start(task),
            Command::Feed { task, .. } | Command::EndFeed { task } => self.hand_feed(task),
            Command::Kill { task } => {
                // The machine has let the task go; tell its agent (best effort).
                let key = format!(
                    "{}.{task}.{}",
                    self.row.id,
                    self.attempts.get(&task).unwrap_or(&0)
                );
                let node = self.runs.remove(&task).map(|r| r.node);
                if let Some(url) = node.and_then(|n| self.url(&n)) {
                    let agents = self.agents.clone();
                    self.kills.spawn(async move {
                        let _ = agents.kill(&url, &Key { key }).await;
                    });
                }
            }
            Command::Error(_) | Command::Out(_) | Command::JobDone => {}
        }
    }

    /// Queue the data of outputs that will never be created for deletion.
    pub(super) fn discard(&mut self, objects: Vec<PutObject>) {
        let meta = self.meta.clone();
        self.tasks.spawn(async move {
            for o in objects {
                let g = Garbage {
                    data_id: o.data.id,
                    nodes: o.data.nodes,
                };
                let _ = meta.queue_garbage(&g).await;
            }
        });
    }

    /// Hand the feeder of run `task` what it has not had yet.
    fn hand_feed(&mut self, task: TaskId) {
        let Some(r) = self.runs.get_mut(&task) else {
            return;
        };
        let Some(f) = &r.feeder else {
            return;
        };
        let end = r.ended && !r.end_handed;
        if r.handed < r.feeds.len() || end {
            let paths = r.feeds[r.handed..].to_vec();
            let known = paths
                .iter()
                .filter_map(|p| Some((p.clone(), self.located.remove(p)?)))
                .collect();
            let _ = f.send((paths, known, end));
            r.handed = r.feeds.len();
            r.end_handed |= end;
        }
    }

    /// Start (or re-attach to) run `task` on its node, with everything fed so far.
    pub(super) fn start(&mut self, task: TaskId) {
        let Some(run) = self.runs.get(&task) else {
            return;
        };
        let req = TaskRequest {
            key: run.key.clone(),
            job: self.row.id.clone(),
            account: self.row.account.clone(),
            phase: run.phase,
            spec: self.spec.phases[run.phase].clone(),
            input: run.input.clone(),
            data: run.data.clone(),
        };
        let results = self.results.clone();
        let key = run.key.clone();
        let node = run.node.clone();
        let Some(url) = self.url(&node) else {
            let f = Failure {
                internal: true,
                code: "InternalError".into(),
                message: format!("node {node} is not registered"),
                stderr: None,
            };
            let r = TaskResult {
                node,
                outputs: Vec::new(),
                objects: Vec::new(),
                failure: Some(f),
            };
            let _ = results.send((task, key, r, true));
            return;
        };
        let agents = self.agents.clone();
        let u = url.clone();
        let on = node.clone();
        self.tasks.spawn(async move {
            let r = agents.run(&u, req).await;
            let unreachable = r.is_err();
            let r = r.unwrap_or_else(|m| TaskResult {
                failure: Some(Failure {
                    internal: true,
                    code: "InternalError".into(),
                    message: format!("node {on}: {m}"),
                    stderr: None,
                }),
                node: on,
                outputs: Vec::new(),
                objects: Vec::new(),
            });
            let _ = results.send((task, key, r, unreachable));
        });
        // A reducer's feed: everything so far (numbered from 0; the agent drops what it has),
        // then what comes, in order. Map tasks are never fed.
        if !matches!(run.input, TaskInput::Reducer(_)) {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<FeedBatch>();
        let key = run.key.clone();
        let agents = self.agents.clone();
        self.tasks.spawn(async move {
            let mut sent = 0u64;
            while let Some((mut paths, mut known, mut end)) = rx.recv().await {
                while let Ok((p, k, e)) = rx.try_recv() {
                    paths.extend(p);
                    known.extend(k);
                    end |= e;
                }
                if paths.is_empty() && !end {
                    continue;
                }
                let f = Feed {
                    key: key.clone(),
                    from: sent,
                    paths,
                    end,
                    known,
                };
                sent += f.paths.len() as u64;
                for _ in 0..20 {
                    match agents.feed(&url, &f).await {
                        Ok(()) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
            }
        });
        if let Some(r) = self.runs.get_mut(&task) {
            r.feeder = Some(tx);
            r.handed = 0;
            r.end_handed = false;
        }
        self.hand_feed(task);
    }
}
