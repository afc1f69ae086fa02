//! Task groups end to end (SPEC §5): on a real cluster, map tasks of one job phase reuse a
//! container on their node. What may carry over (`/tmp`) does so only between tasks of the same
//! job and phase — two jobs interleaved on one node and two phases of one job never see each
//! other's; `init` runs once per container; a failed task's container is not reused; idle
//! containers go within about a second, cancelled ones at once. (Another account's job is
//! another job: the group key is account, job and phase.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::jobs::{add, cluster, create, errors, outputs, task_log, texts, wait};

/// Phase `k` of job `tag`: report what `/tmp` holds from earlier tasks, then add to it (the
/// second phase first passes on the first phase's line, its input).
fn marker(tag: &str, k: usize) -> String {
    let pass = if k == 1 { "cat; " } else { "" };
    format!(
        "{pass}n=$(cat /tmp/tags 2>/dev/null | wc -l); t=$(sort -u /tmp/tags 2>/dev/null | tr '\\n' ' '); \
         echo \"{tag}{k} n=$n tags=[$t] inits=$(wc -l < /tmp/inits)\"; echo {tag}{k} >> /tmp/tags"
    )
}

fn phases(tag: &str) -> Value {
    let init = "echo once >> /tmp/inits";
    json!({"phases": [
        {"exec": marker(tag, 0), "init": init},
        {"exec": marker(tag, 1), "init": init}
    ]})
}

/// Containers (node, id) in the task log by job.
fn containers(log: &[Value]) -> BTreeMap<String, BTreeSet<(String, u64)>> {
    let mut m: BTreeMap<String, BTreeSet<(String, u64)>> = BTreeMap::new();
    for r in log {
        let job = r["key"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_string();
        let node = r["node"].as_str().unwrap().to_string();
        let id = r["container"].as_u64().unwrap();
        m.entry(job).or_default().insert((node, id));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_carries_over_only_within_one_job_phase_and_init_runs_once_per_container() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "g", 24, 3).await;
    let inputs: Vec<String> = objs.iter().map(|(p, _)| p.clone()).collect();
    // Two jobs interleaved on the two nodes (each holds a copy of every input).
    let a = create(&t, phases("A")).await;
    let b = create(&t, phases("B")).await;
    for chunk in inputs.chunks(6) {
        add(&t, &a, chunk, false).await;
        add(&t, &b, chunk, false).await;
    }
    add(&t, &a, &[], true).await;
    add(&t, &b, &[], true).await;
    let mut reused = 0;
    for (job, tag) in [(&a, "A"), (&b, "B")] {
        let s = wait(&t, job, 60).await;
        assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, job).await);
        let outs = outputs(&t, job).await;
        assert_eq!(outs.len(), objs.len());
        for o in &outs {
            let lines: Vec<&str> = o.lines().collect();
            assert_eq!(lines.len(), 2, "{o}");
            for (k, line) in lines.iter().enumerate() {
                let own = format!("{tag}{k}");
                assert!(line.starts_with(&format!("{own} ")), "{line}");
                assert!(
                    line.ends_with(" inits=1"),
                    "init once per container: {line}"
                );
                let seen = line
                    .split("tags=[")
                    .nth(1)
                    .unwrap()
                    .split(']')
                    .next()
                    .unwrap();
                assert!(
                    seen.is_empty() || seen == format!("{own} "),
                    "only its own job and phase's state: {line}"
                );
                if !seen.is_empty() {
                    reused += 1;
                }
            }
        }
    }
    assert!(reused > 0, "containers were reused");
    // The task log: containers are never shared between jobs, and count their tasks.
    let log = task_log(&t);
    let by_job = containers(&log);
    let (ca, cb) = (
        &by_job[a.rsplit('/').next().unwrap()],
        &by_job[b.rsplit('/').next().unwrap()],
    );
    assert!(ca.is_disjoint(cb), "{ca:?} {cb:?}");
    assert!(log.iter().any(|r| r["group_task"].as_u64().unwrap() > 1));
    assert!(log
        .iter()
        .all(|r| r["cpu_ms"].is_u64() && r["memory_peak"].as_u64().unwrap() > 0));
    // Idle containers are gone within about a second of the jobs' end.
    let g = t.c.node_dir(0).join("agent").join("g");
    let end = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&g).unwrap().count() > 0 {
        assert!(
            Instant::now() < end,
            "idle containers left in {}",
            g.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tasks_container_is_not_reused() {
    let Some(t) = cluster(2).await else { return };
    let objs = texts(&t, "f", 12, 3).await;
    let inputs: Vec<String> = objs.iter().map(|(p, _)| p.clone()).collect();
    // Every third input fails its task.
    let job = create(
        &t,
        json!({"phases": [{"exec": "echo x >> /tmp/n; wc -l < /tmp/n; case $MANTA_INPUT_OBJECT in *[036].txt) exit 3;; esac"}]}),
    )
    .await;
    add(&t, &job, &inputs, true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 4, "{s}");
    let log = task_log(&t);
    for f in log.iter().filter(|r| r["failed"] == true) {
        let later: Vec<&Value> = log
            .iter()
            .filter(|r| {
                r["node"] == f["node"]
                    && r["container"] == f["container"]
                    && r["group_task"].as_u64() > f["group_task"].as_u64()
            })
            .collect();
        assert!(
            later.is_empty(),
            "ran in a failed task's container: {f} {later:?}"
        );
    }
    // The successful outputs count the tasks their container ran before them.
    let outs = outputs(&t, &job).await;
    assert_eq!(outs.len(), 8);
    assert!(outs.iter().any(|o| o.trim() != "1"), "{outs:?}");
}

/// A node runs no more map tasks at once than its slots, though the coordinator places more on
/// it ahead (they wait at its agent, to start the moment a slot frees): with one slot each, a
/// phase's tasks on a node run one after another — their programs' lifetimes never overlap —
/// all in one container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_no_more_tasks_at_once_than_its_slots() {
    let one_slot = |c: &mut mobula::cluster::ClusterConfig| {
        if let Some(a) = &mut c.agent {
            a.slots = Some(1);
        }
    };
    let Some(t) = crate::jobs::cluster_with(2, one_slot).await else {
        return;
    };
    let objs = texts(&t, "s", 10, 3).await;
    let inputs: Vec<String> = objs.iter().map(|(p, _)| p.clone()).collect();
    let exec = "echo $MANTA_INPUT_OBJECT $(date +%s%N); sleep 0.2; date +%s%N";
    let job = create(&t, json!({"phases": [{ "exec": exec }]})).await;
    add(&t, &job, &inputs, true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    let log = task_log(&t);
    let node_of: BTreeMap<&str, &str> = log
        .iter()
        .map(|r| (r["input"].as_str().unwrap(), r["node"].as_str().unwrap()))
        .collect();
    let mut spans: BTreeMap<&str, Vec<(u128, u128)>> = BTreeMap::new();
    let outs = outputs(&t, &job).await;
    assert_eq!(outs.len(), inputs.len());
    for o in &outs {
        let w: Vec<&str> = o.split_whitespace().collect();
        let span = (w[1].parse().unwrap(), w[2].parse().unwrap());
        spans.entry(node_of[w[0]]).or_default().push(span);
    }
    for (node, s) in &mut spans {
        s.sort();
        for w in s.windows(2) {
            assert!(w[0].1 <= w[1].0, "two tasks ran at once on {node}: {s:?}");
        }
    }
    let id = job.rsplit('/').next().unwrap();
    for (node, c) in containers(&log).get(id).unwrap().iter().fold(
        BTreeMap::<&str, usize>::new(),
        |mut m, (n, _)| {
            *m.entry(n.as_str()).or_default() += 1;
            m
        },
    ) {
        assert_eq!(c, 1, "{node} ran the phase in {c} containers");
    }
}
