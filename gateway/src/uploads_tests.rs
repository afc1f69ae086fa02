//! The multipart commit against fake nodes and a real metadata service: a node failing the
//! concatenation fails the commit without losing the upload (its parts stay, nothing half-made
//! is visible, the new data is discarded), and the same commit succeeds once the node is back.

use mobula_http::{ApiError, Code};
use mobula_storage_node::fake::Fault;
use serde_json::{json, Value};

use crate::testing::{bytes, served, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_failing_the_concatenation_fails_the_commit_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_gw, fake, base) = served(2, dir.path()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/a/uploads"))
        .json(&json!({"objectPath": "/a/stor/big", "headers": {"durability-level": "2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let v: Value = r.json().await.unwrap();
    let parts_dir = v["partsDirectory"].as_str().unwrap().to_string();
    let parts = [bytes(3000), bytes(1500)];
    let mut etags = Vec::new();
    for (n, p) in parts.iter().enumerate() {
        let r = http
            .put(format!("{base}{parts_dir}/{n}"))
            .body(p.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        etags.push(r.headers()["etag"].to_str().unwrap().to_string());
    }
    let files = |fake: &mobula_storage_node::fake::FakeNodes| {
        fake.files_on(&url(0)) + fake.files_on(&url(1))
    };
    assert_eq!(files(&fake), 4, "two parts, two copies each");
    let commit = || {
        http.post(format!("{base}{parts_dir}/commit"))
            .json(&json!({ "parts": etags }))
            .send()
    };
    // Node 1 refuses to concatenate (its own failure): the commit fails, nothing is visible.
    let broken = ApiError::new(Code::InternalError, "disk on fire");
    fake.fail(&url(1), Fault::ConcatAnswers(broken));
    let r = commit().await.unwrap();
    assert_eq!(r.status(), 500, "{}", r.text().await.unwrap());
    let r = http.get(format!("{base}/a/stor/big")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Its parts are intact and the half-made object's copy on node 0 is reclaimed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files(&fake) != 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(files(&fake), 4, "only the parts remain");
    // Once the node is well, the same commit succeeds and the object reads back whole.
    fake.heal(&url(1));
    let r = commit().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = http
        .get(format!("{base}/a/stor/big"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, [parts[0].clone(), parts[1].clone()].concat());
}
