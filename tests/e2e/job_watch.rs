//! Watching a job without polling: `live/status` carries the job's version in `Job-Version`,
//! and `?since=<version>` holds the request until the job changes — answered at once when it
//! does, and at once when the caller's version is already stale.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::T;

async fn status(t: &T, job: &str, since: Option<&str>) -> (serde_json::Value, String) {
    let q = since.map(|v| format!("?since={v}")).unwrap_or_default();
    let r = t.get(&format!("{job}/live/status{q}")).await;
    assert_eq!(r.status(), 200);
    let v = r.headers()["job-version"].to_str().unwrap().to_string();
    (r.json().await.unwrap(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_waits_for_the_next_change_and_answers_at_once_on_it() {
    let t = T::start(1).await;
    let r = t
        .req(Method::POST, "/admin/jobs")
        .json(&json!({"phases": [{"type": "map", "exec": "cat"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let job = r.headers()["location"].to_str().unwrap().to_string();
    let (s, v1) = status(&t, &job, None).await;
    assert_ne!(s["state"], "done");

    // A stale version answers at once.
    let start = Instant::now();
    let (_, v) = status(&t, &job, Some("queued.0.0.0.00-stale")).await;
    assert_eq!(v, v1);
    assert!(start.elapsed() < Duration::from_secs(1));

    // The current version waits, and the change ends the wait at once.
    let waiter = {
        let (url, job, v1) = (t.c.url().to_string(), job.clone(), v1.clone());
        tokio::spawn(async move {
            let r = reqwest::get(format!("{url}{job}/live/status?since={v1}"))
                .await
                .unwrap();
            let v = r.headers()["job-version"].to_str().unwrap().to_string();
            (v, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "no change yet: still waiting");
    let ended = Instant::now();
    let r = t
        .req(Method::POST, &format!("{job}/live/in/end"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (v2, answered) = waiter.await.unwrap();
    assert_ne!(v2, v1);
    assert!(
        answered.duration_since(ended) < Duration::from_millis(500),
        "the change was told in {:?}",
        answered.duration_since(ended)
    );

    // Following versions reaches the end of the job (no inputs: done once input ends).
    let mut seen = v2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = status(&t, &job, Some(&seen)).await;
        if s["state"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "job not done: {s}");
        seen = v;
    }
}
