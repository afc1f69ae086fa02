//! Storage nodes' lifecycle (issue 18): `mobula node drain` under load ends with the node
//! holding nothing needed and no failed request, then `mobula node remove`; a node silent past
//! `--dead-after` is declared dead and its copies come back to durability from the others;
//! `mobula node rebalance` gives a node that joined empty a share of the old copies. No object
//! ever drops below its copies: every object reads back exact throughout.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{bytes, T};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

async fn mobula(t: &T, args: &[&str]) -> String {
    let o = tokio::process::Command::new(BIN)
        .args(args)
        .env("MOBULA_METADATA_URL", t.c.metadata_url())
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "mobula {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Put `n` objects of a few sizes under `/admin/stor/<dir>/`; their paths and bodies.
async fn objects(t: &T, dir: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let r = t
        .req(reqwest::Method::PUT, &format!("/admin/stor/{dir}"))
        .header("content-type", "application/json; type=directory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut out = Vec::new();
    for i in 0..n {
        let path = format!("/admin/stor/{dir}/o{i}");
        let body = bytes([10, 5000, 300_000][i % 3], i as u64);
        assert_eq!(t.put(&path, body.clone()).await.status(), 204);
        out.push((path, body));
    }
    out
}

async fn all_exact(t: &T, objs: &[(String, Vec<u8>)], not_on: &str) {
    for (path, body) in objs {
        assert!(t.get_bytes(path).await == *body, "{path}");
        let d = t.data_of(path).await;
        assert_eq!(d.nodes.len(), 2, "{path}: {:?}", d.nodes);
        assert!(
            !d.nodes.iter().any(|n| n == not_on),
            "{path} still on {not_on}"
        );
    }
}

#[tokio::test]
async fn a_drained_node_ends_holding_nothing_needed_with_no_failed_request() {
    let t = T::start(4).await;
    let objs = objects(&t, "d", 45).await;
    let meta = &t.c.gw.meta;
    let mut most = (String::new(), 0);
    for n in meta.nodes().await.unwrap() {
        let c = meta.node_copies(&n.id).await.unwrap();
        if c > most.1 {
            most = (n.id.clone(), c);
        }
    }
    let x = most.0.clone();
    assert!(most.1 > 0);
    // Load all along: PUTs and GETs, none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, failed, url, objs) = (
            stop.clone(),
            failed.clone(),
            t.c.url().to_string(),
            objs.clone(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let put = http
                    .put(format!("{url}/admin/stor/d/load{i}"))
                    .body(vec![7u8; 2000])
                    .send()
                    .await;
                let (path, body) = &objs[i % objs.len()];
                let get = http.get(format!("{url}{path}")).send().await;
                let ok = put.is_ok_and(|r| r.status() == 204)
                    && match get {
                        Ok(r) => r.bytes().await.is_ok_and(|b| b == *body),
                        Err(_) => false,
                    };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            i
        })
    };
    let said = mobula(&t, &["node", "drain", &x, "--no-wait"]).await;
    assert!(said.contains(&format!("draining {x}")), "{said}");
    t.c.gw.nodes.refresh().await.unwrap();
    let drained = || async {
        let start = Instant::now();
        loop {
            // PUTs placed before the gateway saw the drain: queued again (as the gateways do
            // every 30 s).
            meta.node_evacuate(&x).await.unwrap();
            if meta.node_copies(&x).await.unwrap() == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "drain did not finish"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    drained().await;
    stop.store(true, Ordering::Relaxed);
    let requests = load.await.unwrap();
    // A PUT placed on the node just before the gateway saw the drain may have been
    // acknowledged after the wait above (on a loaded machine): its copy is moved too.
    drained().await;
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {requests} load requests"
    );
    all_exact(&t, &objs, &x).await;
    let list = mobula(&t, &["node", "list"]).await;
    let line = list.lines().find(|l| l.contains(&x)).unwrap();
    assert!(line.contains("draining"), "{line}");
    // Remove: refused for an active node, done for the drained one.
    let active = meta
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id != x)
        .unwrap();
    let e = meta.node_remove(&active.id).await.unwrap_err();
    assert_eq!(e.code, mobula_http::Code::InvalidUpdate);
    let said = mobula(&t, &["node", "remove", &x]).await;
    assert!(said.contains("removed"), "{said}");
    assert!(!mobula(&t, &["node", "list"]).await.contains(&x));
}

#[tokio::test]
async fn a_dead_nodes_copies_come_back_to_durability() {
    let mut t = T::start_with(4, |c| c.gateway.dead_after = Duration::from_secs(2)).await;
    let objs = objects(&t, "dead", 30).await;
    let meta = t.c.gw.meta.clone();
    let victim = meta.nodes().await.unwrap()[0].id.clone();
    assert!(meta.node_copies(&victim).await.unwrap() > 0);
    let i = t.node_index(&victim);
    t.c.kill_node(i).await;
    let start = Instant::now();
    loop {
        let s = meta.summary().await.unwrap();
        let gone = meta.node_copies(&victim).await.unwrap() == 0;
        if gone && s.under_replicated == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "still {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = meta.nodes().await.unwrap();
    let dead = n.iter().find(|n| n.id == victim).unwrap();
    assert_eq!(dead.state, "dead");
    all_exact(&t, &objs, &victim).await;
}

#[tokio::test]
async fn rebalance_gives_an_empty_node_a_share_of_the_copies() {
    let t = T::start(4).await;
    let meta = t.c.gw.meta.clone();
    // Node 0 takes nothing while the objects are written (as a node added later would).
    let newcomer = meta.nodes().await.unwrap()[0].id.clone();
    meta.node_set_state(&newcomer, "draining").await.unwrap();
    t.c.gw.nodes.refresh().await.unwrap();
    let objs = objects(&t, "rb", 60).await;
    assert_eq!(meta.node_copies(&newcomer).await.unwrap(), 0);
    meta.node_set_state(&newcomer, "active").await.unwrap();
    t.c.gw.nodes.refresh().await.unwrap();
    let said = mobula(&t, &["node", "rebalance"]).await;
    assert!(said.contains("to move"), "{said}");
    let start = Instant::now();
    while meta.node_copies(&newcomer).await.unwrap() < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "{said}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while !meta.repairs(10).await.unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut total = 0;
    for n in meta.nodes().await.unwrap() {
        total += meta.node_copies(&n.id).await.unwrap();
    }
    assert_eq!(total, 120, "every object still at 2 copies");
    all_exact(&t, &objs, "none").await;
}
