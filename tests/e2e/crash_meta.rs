//! Group commit under crashes: the metadata service (its own process) aborts while a batch of
//! concurrent writes is in flight — after the batch's writes ran but before its commit, and
//! after the commit but before any of its writers is answered. After a restart every
//! acknowledged PUT is there with its bytes; an unacknowledged one is either absent or whole —
//! never half-visible (a gateway that heard no answer keeps the data it wrote: the service may
//! have committed it). Needs the `failpoints` feature.
#![cfg(feature = "failpoints")]

use std::time::Duration;

use futures::StreamExt;
use mobula::cluster;
use mobula_gateway::{Gateway, GatewayConfig};
use tokio::process::Child;

use crate::crash::{spawn_armed, spawn_node};

/// The metadata service on `addr`, armed with `crash_at`; returns once it listens.
async fn metadata(dir: &std::path::Path, addr: &str, crash_at: &str) -> Child {
    let args = ["metadata", "--create-account", "admin", "--listen", addr];
    spawn_armed(&args, dir, crash_at).await.0
}

fn body(i: usize) -> Vec<u8> {
    format!("object {i} ").repeat(100 + i % 37).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_crash_mid_batch_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let murl = format!("http://{addr}");
    let mdir = tmp.path().join("meta");
    let mut meta = metadata(&mdir, &addr, "").await;
    let mut nodes = Vec::new();
    for i in 0..2 {
        nodes.push(spawn_node(&tmp.path().join(format!("n{i}")), &murl, "").await);
    }
    let gw = Gateway::new(GatewayConfig::new(&murl));
    let (gl, url) = cluster::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let _gwr = cluster::start_gateway(gl, url.clone(), gw.clone());
    let http = reqwest::Client::new();
    let registered = || async {
        for _ in 0..200 {
            if gw.meta.nodes().await.is_ok_and(|n| n.len() == 2) && gw.nodes.refresh().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nodes did not register");
    };
    registered().await;
    let mut n = 0;
    for (point, committed) in [
        ("meta-batch-before-commit", false),
        ("meta-batch-before-ack", true),
    ] {
        // Arm: abort in the 30th batch of 3 or more writes from now (the crash points skip
        // smaller batches: the two nodes' heartbeats alone would carry no PUT).
        let _ = meta.kill().await;
        meta = metadata(&mdir, &addr, &format!("{point}@30")).await;
        let first = n;
        n += 400;
        let results: Vec<(usize, bool)> = futures::stream::iter(first..n)
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let r = http
                        .put(format!("{url}/admin/stor/o{i}"))
                        .body(body(i))
                        .send()
                        .await;
                    (i, r.is_ok_and(|r| r.status().is_success()))
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let status = tokio::time::timeout(Duration::from_secs(20), meta.wait())
            .await
            .expect("the metadata service reached its crash point")
            .unwrap();
        assert!(!status.success(), "{point}: aborted");
        let acked: Vec<usize> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
        assert!(
            !acked.is_empty() && acked.len() < 400,
            "{point}: {}",
            acked.len()
        );
        meta = metadata(&mdir, &addr, "").await;
        registered().await;
        let (mut present, mut absent) = (0, 0);
        for (i, ok) in results {
            let r = http
                .get(format!("{url}/admin/stor/o{i}"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => {
                    assert_eq!(r.bytes().await.unwrap(), body(i), "{point}: o{i} whole");
                    present += 1;
                }
                404 => {
                    assert!(!ok, "{point}: acknowledged o{i} lost");
                    absent += 1;
                }
                s => panic!("{point}: o{i}: {s}"),
            }
        }
        // After the commit, the crashed batch's writes are there though no one heard so.
        // (Before it, an unacknowledged write may still be there: one whose batch committed
        // earlier, its answer lost with the process.)
        if committed {
            assert!(
                present > acked.len(),
                "{point}: the committed batch is visible"
            );
        }
        assert!(absent > 0);
    }
    let _ = meta.kill().await;
}
