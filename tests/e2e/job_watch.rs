//! Watching a job without polling: `live/status` carries the job's version in `Job-Version`,
//! and `?since=<version>` holds the request until the job changes — answered at once when its
//! state changes or the caller's version is of another state, and a running job's progress
//! gathered for up to 50 ms.

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

/// A busy job's watcher is answered a few times a second (its progress gathered for up to
/// 50 ms), not once per task — and of the job's end at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_jobs_progress_is_gathered_and_its_end_told_at_once() {
    let Some(t) = crate::jobs::cluster(3).await else {
        return;
    };
    let objs = crate::jobs::texts(&t, "busy", 150, 2).await;
    let job = crate::jobs::create(&t, json!({"phases": [{"type": "map", "exec": "wc -w"}]})).await;
    let (_, mut seen) = status(&t, &job, None).await;
    crate::jobs::add(&t, &job, &crate::jobs::paths(&objs), true).await;
    let started = Instant::now();
    let mut answers = 0;
    let last = loop {
        let (s, v) = status(&t, &job, Some(&seen)).await;
        answers += 1;
        if s["state"] == "done" {
            assert_eq!(s["stats"]["tasks"], 150, "{s}");
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "job not done: {s}"
        );
        seen = v;
    };
    let took = last.duration_since(started).as_secs_f64();
    // At most one progress answer per 50 ms, and a few told at once (input added, its end,
    // the job's end).
    let bound = took / 0.05 + 4.0;
    eprintln!("{answers} answers in {took:.2} s for 150 tasks (bound {bound:.0})");
    assert!(
        f64::from(answers) <= bound,
        "{answers} answers in {took:.2} s"
    );
}
