//! A job's small outputs under `mobula up` on a journaled ext4, where the agent writes each
//! output's peer copy straight into the peer node's store on the call that commits its own
//! (no fetch over HTTP): every output still has two copies, with the right bytes, through a
//! map and a reduce phase.

use std::time::Duration;

use serde_json::{json, Value};

use crate::metrics::{scrape, sum, wait_ready, Proc};

#[tokio::test]
async fn small_outputs_on_one_journal_get_their_copies_without_a_fetch() {
    if !nix::unistd::geteuid().is_root() {
        return crate::skip("this test runs a job (task sandboxes need root)");
    }
    let Some(fs) = mobula_storage_node::volume::loopback::TempExt4::for_test("has_journal") else {
        return;
    };
    let data = fs.mountpoint.join("up").to_string_lossy().to_string();
    let up = Proc::up(&data);
    let url = up.url("gateway listening on").await;
    let admin = up.url("metrics at").await;
    let http = reqwest::Client::new();
    wait_ready(&http, &admin).await;
    let mut inputs = Vec::new();
    for i in 0..12 {
        let path = format!("/admin/stor/in{i}");
        let body = "word ".repeat(i + 1);
        let r = http.put(format!("{url}{path}")).body(body).send();
        assert_eq!(r.await.unwrap().status(), 204);
        inputs.push(path);
    }
    let phases = json!({"phases": [
        {"type": "map", "exec": "wc -w"},
        {"type": "reduce", "exec": "awk '{s += $1} END {print s}'"},
    ]});
    let r = http.post(format!("{url}/admin/jobs")).json(&phases).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 201);
    let job = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .post(format!("{url}{job}/live/in?end=true"))
        .body(inputs.join("\n"))
        .send();
    assert_eq!(r.await.unwrap().status(), 204);
    let get = |u: String| {
        let http = http.clone();
        async move { http.get(u).send().await.unwrap().text().await.unwrap() }
    };
    let mut done = false;
    for _ in 0..600 {
        let s: Value = serde_json::from_str(&get(format!("{url}{job}/live/status")).await).unwrap();
        if s["state"] == "done" {
            assert_eq!(s["stats"]["errors"], 0, "{s}");
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the job did not finish");
    let out = get(format!("{url}{job}/live/out")).await;
    let outs: Vec<&str> = out.lines().collect();
    assert_eq!(outs.len(), 1, "{out}");
    assert_eq!(get(format!("{url}{}", outs[0])).await, "78\n"); // 1 + 2 + … + 12 words

    let head = http.head(format!("{url}{}", outs[0])).send().await.unwrap();
    assert_eq!(head.headers()["durability-level"], "2");
    let m = scrape(&http, &admin).await;
    let fetches = sum(
        &m,
        "mobula_requests_total",
        &[("api", "node"), ("op", "FetchData")],
    );
    assert_eq!(fetches, 0.0, "outputs were fetched over HTTP");
    let written = sum(&m, "mobula_copies_written_total", &[]);
    // 12 inputs, 12 map outputs and 1 reduce output, two copies each (and the job's archive).
    eprintln!("copies written: {written}");
    assert!(written >= 50.0, "{written}");
    assert_eq!(written, sum(&m, "mobula_node_copies", &[]));
}
