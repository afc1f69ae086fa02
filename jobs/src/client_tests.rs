//! An agent whose node runs in this process is called without HTTP, and a call to it fails as
//! unreachable once its node stops — one in flight too, as its dropped connection would.

use std::time::Duration;

use mobula_storage_node::volume::loopback::skipped;
use mobula_storage_node::{LocalNodes, NodeConfig, Store};

use super::*;
use crate::agent::{Agent, AgentConfig};

/// A URL where nothing listens (a port bound, then let go).
fn nowhere() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn request(key: &str) -> TaskRequest {
    serde_json::from_value(serde_json::json!({
        "key": key,
        "job": key.split('.').next().unwrap(),
        "account": "a",
        "phase": 0,
        "spec": {"exec": "cat"},
        "input": {"Object": {"path": "/a/stor/in", "nodes": []}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_in_this_process_is_called_without_http_until_its_node_stops() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing answers at the node's advertised URL nor at the metadata service's: only an
    // in-process call reaches the agent, and the task's input lookup waits out the outage.
    let (url, metadata_url) = (nowhere(), nowhere());
    let store = Store::open(dir.path()).unwrap();
    let agent = match Agent::new(AgentConfig {
        node_dir: dir.path().to_path_buf(),
        node_id: store.node_id().unwrap(),
        url: url.clone(),
        metadata_url: metadata_url.clone(),
        exe: std::env::current_exe().unwrap(),
        slots: 1,
        local: None,
    }) {
        Ok(a) => a,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            skipped::<()>(format!("the agent's sandbox: {e}"));
            return;
        }
        Err(e) => panic!("agent: {e}"),
    };
    let local = LocalNodes::default();
    let mut cfg = NodeConfig::new(dir.path().to_path_buf(), &metadata_url);
    cfg.advertise_url = Some(url.clone());
    cfg.local = Some(local.clone());
    cfg.extension = Some(agent.extension());
    drop(agent);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = tokio::spawn(mobula_storage_node::run(
        cfg,
        listener,
        std::future::pending(),
    ));
    while !local.contains(&url) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = AgentClient::with_local(Some(local.clone()));
    let key = Key {
        key: "j0.0.0".into(),
    };
    c.kill(&url, &key).await.unwrap();
    assert!(matches!(
        c.run(&url, request("bad/key.0.0")).await,
        Err(AgentError::Status(400))
    ));
    // Without the local nodes the same call goes over HTTP, where no one answers.
    let http = AgentClient::new();
    assert!(matches!(
        http.kill(&url, &key).await,
        Err(AgentError::Unreachable(_))
    ));
    let in_flight = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move { c.run(&url, request("j1.0.0")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the task waits for its input");
    node.abort();
    let _ = node.await;
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("a call in flight ends with its node")
        .unwrap();
    assert!(matches!(r, Err(AgentError::Unreachable(_))), "{r:?}");
    assert!(matches!(
        c.kill(&url, &key).await,
        Err(AgentError::Unreachable(_))
    ));
}
