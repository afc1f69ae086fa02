//! Several gateways over one metadata service (issue 18): each serves the whole API, and the
//! jobs coordinator — one lease among them — moves to another gateway when its holder dies,
//! within the lease time, with every task still run exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::jobs::{
    add, assert_uppercased, cluster, create, paths, task_log, texts, wait, wait_running,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_lease_moves_when_its_gateway_dies() {
    let Some(mut t) = cluster(2).await else {
        return;
    };
    let objs = texts(&t, "lease", 6, 10).await;
    let job = create(&t, json!({"phases": [{"exec": "sleep 1; tr a-z A-Z"}]})).await;
    add(&t, &job, &paths(&objs), true).await;
    wait_running(&t, &job).await;
    // A second gateway joins while the first holds the lease; both serve the storage API.
    let mut cfg = t.c.gw.cfg.clone();
    cfg.metadata_url = t.c.metadata_url().to_string();
    let gw2 = mobula_gateway::Gateway::new(cfg);
    let (l, url2) = mobula::cluster::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let g2 = mobula::cluster::start_gateway(l, url2.clone(), gw2.clone());
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{url2}{}", objs[0].0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), objs[0].1);
    // The lease holder dies (its coordinator with it, mid-job).
    let died = Instant::now();
    t.c.gateway.take().unwrap().kill().await;
    t.c.gateway = Some(g2);
    t.c.gw = gw2;
    t.http = reqwest::Client::new();
    let s = wait(&t, &job, 60).await;
    let took = died.elapsed();
    assert_eq!(s["stats"]["errors"], 0);
    assert_uppercased(&t, &job, &objs).await;
    // Each task ran once: the new coordinator re-attached to those running.
    assert_eq!(task_log(&t).len(), 6);
    // Taken over within the lease time (10 s), plus the tasks still to run (1 s each, 2 slots
    // per node on 2 nodes).
    assert!(took < Duration::from_secs(10 + 6), "{took:?}");
}
