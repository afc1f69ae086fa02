//! The roles as separate OS processes of the `mobula` binary, pointed at each other by URL;
//! and `mobula up` keeping its state across a restart.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

/// Start `mobula ARGS…` and wait for its line containing "listening on"; returns the URL.
async fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(i) = l.find("http://") {
                return l[i..].split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("{args:?} exited before listening");
    })
    .await
    .expect("role started");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

async fn wait_ok(
    http: &reqwest::Client,
    f: impl Fn() -> reqwest::RequestBuilder,
) -> reqwest::Response {
    for _ in 0..100 {
        if let Ok(r) = f().send().await {
            if r.status().is_success() {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = http;
    panic!("request never succeeded");
}

#[tokio::test]
async fn roles_run_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let (_meta, murl) = spawn(&[
        "metadata",
        "--data",
        &d("meta"),
        "--listen",
        "127.0.0.1:0",
        "--create-account",
        "admin",
    ])
    .await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            spawn(&[
                "storage-node",
                "--data",
                &d(&format!("n{i}")),
                "--metadata",
                &murl,
            ])
            .await
            .0,
        );
    }
    let (_gw, gurl) = spawn(&["gateway", "--listen", "127.0.0.1:0", "--metadata", &murl]).await;
    let http = reqwest::Client::new();
    let body = crate::bytes(300_000, 5);
    wait_ok(&http, || {
        http.put(format!("{gurl}/admin/stor/x")).body(body.clone())
    })
    .await;
    let got = http
        .get(format!("{gurl}/admin/stor/x"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == body);
    // SIGKILL one node process: the object (2 copies) still reads, new writes still land.
    nodes[0].kill().await.unwrap();
    for _ in 0..5 {
        let r = http
            .get(format!("{gurl}/admin/stor/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap() == body);
    }
    wait_ok(&http, || {
        http.put(format!("{gurl}/admin/stor/y")).body("after")
    })
    .await;
    let got = http
        .get(format!("{gurl}/admin/stor/y"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(got, "after");
}

#[tokio::test]
async fn up_keeps_state_across_restarts_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").to_string_lossy().to_string();
    let http = reqwest::Client::new();
    let (mut up, url) = spawn(&[
        "up",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--nodes",
        "3",
    ])
    .await;
    wait_ok(&http, || {
        http.put(format!("{url}/admin/stor/kept"))
            .body("still here")
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(up.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), up.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "Ctrl-C stops cleanly: {status}");
    let (_up, url) = spawn(&[
        "up",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--nodes",
        "3",
    ])
    .await;
    let r = wait_ok(&http, || http.get(format!("{url}/admin/stor/kept"))).await;
    assert_eq!(r.text().await.unwrap(), "still here");
}
