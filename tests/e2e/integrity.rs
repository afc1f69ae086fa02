//! End-to-end integrity: a flipped byte in a stored copy is never served; the GET continues from
//! another copy mid-stream; the bad copy is quarantined and re-copied; with every copy bad the
//! response is cut, not completed; scrub finds bad copies nobody read.

use std::time::Duration;

use reqwest::Method;

use crate::{bytes, T};

fn flip(path: &std::path::Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x40;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

async fn quarantined(t: &T, node: usize) -> Vec<String> {
    reqwest::get(format!("{}/quarantine", t.node_url(node)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait until node `bad` quarantined its copy, then until `path`'s data is back on `copies`
/// nodes and every node's scrub is clean.
async fn wait_repaired(t: &T, path: &str, bad: usize, copies: usize) {
    let id = t.data_of(path).await.id;
    for _ in 0..200 {
        if quarantined(t, bad).await.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Long enough for a source the test marked failed to serve again (the gateway's 10 s
    // penalty) and for the repair given back meanwhile to be retried (5 s later): a count of
    // polls ran out early once the polls got faster.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < deadline {
        let d = t.data_of(path).await;
        let pending = t.c.gw.meta.repairs(10).await.unwrap();
        let present = d
            .nodes
            .iter()
            .all(|n| t.data_path(t.node_index(n), &d.id).exists());
        if d.nodes.len() == copies && pending.is_empty() && present {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = t.data_of(path).await;
    assert_eq!(d.nodes.len(), copies, "repaired back to its durability");
    for n in &d.nodes {
        let i = t.node_index(n);
        let report = t.c.gw.node_client.scrub(&t.node_url(i)).await.unwrap();
        assert!(
            report.bad.is_empty(),
            "node {n} clean after repair: {:?}",
            report.bad
        );
        assert!(t.data_path(i, &d.id).exists());
    }
}

#[tokio::test]
async fn a_flipped_byte_is_never_served_and_gets_repaired() {
    // Metrics on in this test process: the bad copy and its repair are counted (by node id,
    // so other tests' clusters do not count here).
    mobula_http::telemetry::install();
    let t = T::start(3).await;
    let body = bytes(5 << 20, 11);
    assert_eq!(t.put("/admin/stor/obj", body.clone()).await.status(), 204);
    let d = t.data_of("/admin/stor/obj").await;
    let (bad, good) = (t.node_index(&d.nodes[0]), &d.nodes[1]);
    flip(&t.data_path(bad, &d.id), (3 << 20) + 17);
    // Serve from the bad copy first: the body must still be exact (continued from the good one).
    t.c.gw.nodes.mark_failed(good);
    let got = t.get("/admin/stor/obj").await.bytes().await.unwrap();
    assert!(got == body, "exact object despite a corrupt copy");
    // The bad copy was quarantined and re-copied.
    wait_repaired(&t, "/admin/stor/obj", bad, 2).await;
    assert_eq!(
        quarantined(&t, bad).await,
        vec![d.id.clone()],
        "the bad copy is kept aside"
    );
    assert!(t.get("/admin/stor/obj").await.bytes().await.unwrap() == body);
    let m = crate::metrics::parse(&mobula_http::telemetry::render());
    let bad_id = d.nodes[0].as_str();
    let bad_here = crate::metrics::sum(&m, "mobula_copies_bad_total", &[("node", bad_id)]);
    assert_eq!(bad_here, 1.0);
    let ours = t.c.gw.meta.nodes().await.unwrap();
    let repaired: f64 = ours
        .iter()
        .map(|n| crate::metrics::sum(&m, "mobula_copies_repaired_total", &[("node", &n.id)]))
        .sum();
    assert_eq!(repaired, 1.0);
}

/// A small object (read whole in one step by an in-process node) with a flipped byte: never
/// served, the range read from the good copy, the bad one quarantined and re-made.
#[tokio::test]
async fn a_flipped_byte_in_a_small_object_is_never_served_and_gets_repaired() {
    let t = T::start(3).await;
    let body = bytes(10_000, 14);
    assert_eq!(t.put("/admin/stor/small", body.clone()).await.status(), 204);
    let d = t.data_of("/admin/stor/small").await;
    let (bad, good) = (t.node_index(&d.nodes[0]), &d.nodes[1]);
    flip(&t.data_path(bad, &d.id), 4321);
    t.c.gw.nodes.mark_failed(good);
    let got = t.get("/admin/stor/small").await.bytes().await.unwrap();
    assert!(got == body, "exact object despite a corrupt copy");
    wait_repaired(&t, "/admin/stor/small", bad, 2).await;
    assert_eq!(quarantined(&t, bad).await, vec![d.id.clone()]);
    let r = t
        .req(Method::GET, "/admin/stor/small")
        .header("range", "bytes=4000-4999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == body[4000..5000]);
}

#[tokio::test]
async fn scrub_finds_and_repairs_a_copy_nobody_read() {
    let t = T::start(3).await;
    let body = bytes(2 << 20, 12);
    t.put("/admin/stor/s", body.clone()).await;
    let d = t.data_of("/admin/stor/s").await;
    let bad = t.node_index(&d.nodes[1]);
    flip(&t.data_path(bad, &d.id), 5);
    let report = t.c.gw.node_client.scrub(&t.node_url(bad)).await.unwrap();
    assert_eq!(report.bad, vec![d.id.clone()]);
    wait_repaired(&t, "/admin/stor/s", bad, 2).await;
    assert!(t.get("/admin/stor/s").await.bytes().await.unwrap() == body);
}

#[tokio::test]
async fn with_every_copy_bad_the_get_is_refused_or_cut() {
    let t = T::start(3).await;
    let body = bytes(4 << 20, 13);
    t.put("/admin/stor/b", body.clone()).await;
    let d = t.data_of("/admin/stor/b").await;
    // Block 0 of every copy is bad; block 3 is fine everywhere.
    for n in &d.nodes {
        flip(&t.data_path(t.node_index(n), &d.id), 10);
    }
    let r = t
        .req(Method::GET, "/admin/stor/b")
        .header("range", "bytes=3145728-3145827")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206, "a range that avoids the bad block reads");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[3145728..3145828]);
    // Bad from its first block on every copy: refused before any byte, with the error's JSON.
    let r = t.req(Method::GET, "/admin/stor/b").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["code"], "ServiceUnavailable", "{e}");
    // Bad past its head on every copy: the body is cut, not completed.
    let body = bytes(4 << 20, 14);
    t.put("/admin/stor/c", body.clone()).await;
    let d = t.data_of("/admin/stor/c").await;
    for n in &d.nodes {
        flip(&t.data_path(t.node_index(n), &d.id), (2 << 20) + 10);
    }
    let r = t.req(Method::GET, "/admin/stor/c").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "the body must be cut, not completed"
    );
    // A small object bad on every copy: refused too (its one block is read before the head).
    t.put("/admin/stor/s", bytes(4096, 15)).await;
    let d = t.data_of("/admin/stor/s").await;
    for n in &d.nodes {
        flip(&t.data_path(t.node_index(n), &d.id), 100);
    }
    let r = t.req(Method::GET, "/admin/stor/s").send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn gets_are_zstd_compressed_when_asked_and_worth_it() {
    let t = T::start(3).await;
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
        .collect();
    let r = t
        .req(Method::PUT, "/admin/stor/log.txt")
        .header("content-type", "text/plain")
        .body(text.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = t
        .req(Method::GET, "/admin/stor/log.txt")
        .header("accept-encoding", "gzip, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let wire = r.bytes().await.unwrap();
    assert!(
        wire.len() * 5 < text.len(),
        "compressed: {} of {}",
        wire.len(),
        text.len()
    );
    assert_eq!(zstd::decode_all(&wire[..]).unwrap(), text);
    // Not for ranges, not for binary content, not when not asked.
    let r = t
        .req(Method::GET, "/admin/stor/log.txt")
        .header("accept-encoding", "zstd")
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &text[..10]);
    t.put("/admin/stor/bin", text.clone()).await;
    let r = t
        .req(Method::GET, "/admin/stor/bin")
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("content-encoding"));
    let r = t.get("/admin/stor/log.txt").await;
    assert!(!r.headers().contains_key("content-encoding"));
    assert!(r.bytes().await.unwrap() == text);
    // Node-to-node transfers between hosts (repair fetches) ask for zstd and get it; the
    // client asks only when the node is not on loopback (unit-tested beside `is_loopback`),
    // so this asks the node directly.
    let d = t.data_of("/admin/stor/log.txt").await;
    let node = t.node_url(t.node_index(&d.nodes[0]));
    let r = reqwest::Client::new()
        .get(format!("{node}/data/{}", d.id))
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "zstd");
    let plain = t.c.gw.node_client.get_zstd(&node, &d.id).await.unwrap();
    assert!(!plain.headers().contains_key("content-encoding"));
    assert!(plain.bytes().await.unwrap() == text);
    assert_eq!(
        zstd::decode_all(&r.bytes().await.unwrap()[..]).unwrap(),
        text
    );
}

#[tokio::test]
async fn a_restored_node_gets_back_the_copies_it_lost() {
    let mut t = T::start(3).await;
    t.put("/admin/stor/old", "before the snapshot").await;
    let r = t
        .req(Method::PUT, "/admin/stor/new")
        .header("durability-level", "3")
        .body("after")
        .send();
    // Snapshot node 0, then write an object with a copy on every node.
    let node0 = t.node_url(0);
    t.c.gw
        .node_client
        .snapshot_create(&node0, "s")
        .await
        .unwrap();
    assert_eq!(r.await.unwrap().status(), 204);
    let d = t.data_of("/admin/stor/new").await;
    assert!(t.data_path(0, &d.id).exists());
    // Restore node 0 (stopped) to the snapshot: its copy of "new" is gone.
    t.c.kill_node(0).await;
    mobula_storage_node::Store::open(&t.c.node_dir(0))
        .unwrap()
        .volume()
        .snapshot_restore("s")
        .unwrap();
    assert!(!t.data_path(0, &d.id).exists());
    t.c.restart_node(0).await.unwrap();
    t.c.wait_for_nodes(3).await.unwrap();
    let report = t.c.gw.node_client.scrub(&t.node_url(0)).await.unwrap();
    assert_eq!(
        report.missing,
        vec![d.id.clone()],
        "scrub finds the missing copy"
    );
    for _ in 0..200 {
        if t.data_path(0, &d.id).exists() && t.c.gw.meta.repairs(10).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.data_path(0, &d.id).exists(), "re-copied");
    assert_eq!(t.data_of("/admin/stor/new").await.nodes.len(), 3);
    assert_eq!(t.get_bytes("/admin/stor/new").await, b"after");
    assert_eq!(t.get_bytes("/admin/stor/old").await, b"before the snapshot");
}

/// A fetch onto a node that already holds the data (an earlier fetch whose answer was lost:
/// metadata never counted that copy) succeeds with the copy it has when that copy is good, and
/// replaces it when it is bad — a repair aimed there never fails forever.
#[tokio::test]
async fn a_fetch_onto_a_node_already_holding_the_copy_is_idempotent() {
    let t = T::start(3).await;
    let body = bytes(300_000, 7);
    t.put("/admin/stor/f", body.clone()).await;
    let d = t.data_of("/admin/stor/f").await;
    let holder = t.node_url(t.node_index(&d.nodes[0]));
    let k = (0..3)
        .find(|i| !d.nodes.iter().any(|n| t.node_index(n) == *i))
        .unwrap();
    let nc = &t.c.gw.node_client;
    for round in 0..2 {
        let w = nc
            .fetch(&t.node_url(k), &d.id, &holder, &d.blake3)
            .await
            .unwrap_or_else(|e| panic!("fetch {round}: {e}"));
        assert_eq!((w.size, w.blake3.as_str()), (d.size, d.blake3.as_str()));
    }
    assert!(quarantined(&t, k).await.is_empty(), "a good copy is kept");
    // Now a bad copy there: quarantined, and fetched again whole.
    flip(&t.data_path(k, &d.id), 1000);
    let w = nc
        .fetch(&t.node_url(k), &d.id, &holder, &d.blake3)
        .await
        .unwrap();
    assert_eq!(w.blake3, d.blake3);
    assert_eq!(quarantined(&t, k).await, vec![d.id.clone()]);
    let report = nc.scrub(&t.node_url(k)).await.unwrap();
    assert!(report.bad.is_empty(), "{:?}", report.bad);
}

/// A reducer is fed verified bytes: a flipped byte in the copy on the reducer's own node is
/// passed over for the other copy, and the job's output is exactly the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_is_never_fed_a_flipped_copy() {
    use crate::jobs::{add, cluster, create, errors, outputs, wait};
    let Some(t) = cluster(2).await else { return };
    t.mkdir("/admin/stor/rf").await;
    let body: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let path = "/admin/stor/rf/in.txt";
    assert!(t.put(path, body.clone()).await.status().is_success());
    let id = t.data_of(path).await.id;
    let job = create(
        &t,
        serde_json::json!({"phases": [{"type": "reduce", "exec": "cat"}]}),
    )
    .await;
    // The reducer starts with the job; its tools socket shows which node it runs on.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let node = loop {
        let running = (0..2).find(|i| {
            std::fs::read_dir(t.c.node_dir(*i).join("agent").join("t")).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".sock"))
            })
        });
        if let Some(i) = running {
            break i;
        }
        assert!(std::time::Instant::now() < end, "the reducer did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    flip(&t.data_path(node, &id), 100);
    add(&t, &job, &[path.to_string()], true).await;
    let s = wait(&t, &job, 60).await;
    assert_eq!(s["stats"]["errors"], 0, "{:?}", errors(&t, &job).await);
    let outs = outputs(&t, &job).await;
    assert!(outs == [body], "the reducer was fed other bytes");
}
