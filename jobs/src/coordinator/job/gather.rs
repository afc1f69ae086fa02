//! Events from the world for a job's actor: task results (for the run it waits on), node
//! changes, new inputs located in steps of [`INPUT_BATCH`] (their data kept for the run that
//! reads them), and the end and cancel the user asked for.

use std::time::Instant;

use futures::StreamExt;
use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Data, JobRecords, Kind};

use super::{Actor, Reply, INPUT_BATCH, PLACED_PER_SLOT, SUSPECT};
use crate::schedule::{Event, Located};
use crate::spec::readable_by;

impl Actor {
    /// A task's result, if it is for the run the actor is waiting on.
    pub(super) fn result(&mut self, (task, key, r, unreachable): Reply, events: &mut Vec<Event>) {
        let Some(run) = self.runs.get(&task).filter(|run| run.key == key) else {
            return;
        };
        if unreachable {
            // Its node is gone (or cut off): lose it now rather than retry there until its
            // heartbeat goes stale.
            let node = run.node.clone();
            self.suspect.insert(node.clone(), Instant::now());
            if self.known.get(&node).is_some_and(|k| k.0) {
                events.push(Event::NodeLost { node });
                return; // fails every task that ran there, this one included
            }
        }
        if !r.objects.is_empty() {
            self.staged.insert(task, r.objects);
        }
        events.push(match r.failure {
            None => Event::Done {
                task,
                outputs: r.outputs,
            },
            Some(failure) => Event::Failed { task, failure },
        });
    }

    /// Events from the world: node changes, new inputs, end, cancel.
    pub(super) async fn gather(&mut self, events: &mut Vec<Event>) -> Result<(), ApiError> {
        let view = self.nodes.borrow_and_update().clone();
        self.suspect.retain(|_, t| t.elapsed() < SUSPECT);
        for n in &view {
            let up = n.up && n.slots > 0 && !self.suspect.contains_key(&n.id);
            let places = n.slots.saturating_mul(PLACED_PER_SLOT);
            let want = (up, places);
            let have = self.known.get(&n.id).copied();
            if want.0 && have != Some(want) {
                events.push(Event::NodeUp {
                    node: n.id.clone(),
                    slots: places,
                });
            } else if !want.0 && have.is_some_and(|h| h.0) {
                events.push(Event::NodeLost { node: n.id.clone() });
            }
        }
        if self.poked {
            // The row changes only through the API, which pokes (and the coordinator pokes
            // every actor each tick, for API calls served by other gateways).
            let row = self
                .meta
                .job(&self.row.id)
                .await?
                .ok_or_else(|| ApiError::new(Code::JobNotFound, "job vanished"))?;
            self.row.end_requested = row.end_requested;
            self.row.cancel_requested = row.cancel_requested;
            self.row.inputs = row.inputs;
            self.poked = false;
        }
        if self.row.cancel_requested && !self.machine.is_cancelled() {
            events.push(Event::Cancel);
            return Ok(());
        }
        if self.row.inputs > self.consumed {
            let paths = self
                .meta
                .job_records(&JobRecords {
                    id: self.row.id.clone(),
                    kind: "in".into(),
                    from: self.consumed,
                    limit: INPUT_BATCH,
                })
                .await?;
            let account = self.row.account.clone();
            let meta = self.meta.clone();
            let located: Vec<Result<(Event, Option<Data>), ApiError>> =
                futures::stream::iter(paths)
                    .map(|p| {
                        let (meta, account) = (meta.clone(), account.clone());
                        async move {
                            let entry = if readable_by(&p, &account) {
                                meta.get(&p).await?
                            } else {
                                None
                            };
                            let is_dir = entry.as_ref().is_some_and(|e| e.kind == Kind::Directory);
                            let data = entry.and_then(|e| e.data);
                            let at = match &data {
                                Some(d) => Located::Object {
                                    size: d.size,
                                    nodes: d.nodes.clone(),
                                },
                                None if is_dir => Located::Directory,
                                None => Located::Missing,
                            };
                            Ok((Event::Input { path: p, at }, data))
                        }
                    })
                    .buffered(32)
                    .collect()
                    .await;
            for e in located {
                let (ev, data) = e?;
                if let (Event::Input { path, .. }, Some(d)) = (&ev, data) {
                    self.located.insert(path.clone(), d);
                }
                events.push(ev);
                self.consumed += 1;
            }
        }
        if self.row.end_requested && self.consumed == self.row.inputs && !self.machine.input_ended()
        {
            events.push(Event::EndInput);
        }
        Ok(())
    }
}
