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
    // Accounts are administered over the network at the metadata service's listener.
    let o = Command::new(BIN)
        .args(["account", "create", "carol", "--metadata-url", &murl])
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(BIN)
        .args(["account", "list"])
        .env("MOBULA_METADATA_URL", &murl)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "admin\ncarol\n");
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
        "--s3-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--nodes",
        "3",
        "--no-auth",
        "--volume",
        "plain",
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
        "--s3-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--nodes",
        "3",
        "--no-auth",
        "--volume",
        "plain",
    ])
    .await;
    let r = wait_ok(&http, || http.get(format!("{url}/admin/stor/kept"))).await;
    assert_eq!(r.text().await.unwrap(), "still here");
}

/// Start `up` with `HOME=home`; returns the child and the printed `export` lines' variables.
async fn up_with_home(data: &str, home: &std::path::Path) -> (Child, Vec<(String, String)>) {
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--s3-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data",
            data,
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "2",
            "--volume",
            "plain",
        ])
        .env("RUST_LOG", "warn")
        .env("HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut vars = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(rest) = l.trim().strip_prefix("export ") {
                for kv in rest.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap();
                    vars.push((k.to_string(), v.to_string()));
                }
                if l.contains("AWS_") {
                    return;
                }
            }
        }
        panic!("up exited before printing its environment");
    })
    .await
    .expect("up started");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, vars)
}

#[tokio::test]
async fn up_requires_signatures_and_prints_a_working_environment() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let data = dir.path().join("data").to_string_lossy().to_string();
    let (mut up, vars) = up_with_home(&data, &home).await;
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let url = get("MOBULA_URL");
    assert_eq!(get("MANTA_URL"), url);
    assert_eq!(
        (get("MOBULA_ACCOUNT"), get("MANTA_USER")),
        ("admin".into(), "admin".into())
    );
    let key = get("MOBULA_KEY");
    assert!(
        key.starts_with(&data),
        "no ~/.ssh key: one generated in the data dir ({key})"
    );
    let public = std::fs::read_to_string(format!("{key}.pub")).unwrap();
    let (md5, _) = mobula_metadata::api::fingerprints(&public).unwrap();
    assert_eq!(get("MANTA_KEY_ID"), md5);
    let r = reqwest::get(format!("{url}/admin/stor")).await.unwrap();
    assert_eq!(r.status(), 401, "unsigned requests are refused");
    let cli = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args);
        for (k, v) in &vars {
            c.env(k, v);
        }
        c.output()
    };
    let f = dir.path().join("f");
    std::fs::write(&f, "signed").unwrap();
    let o = cli(&["put", f.to_str().unwrap(), "~~/stor/f"])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Account administration with what `up` printed (MOBULA_METADATA_URL) ...
    let o = cli(&["account", "create", "bob"]).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bob =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let bob_pub = dir.path().join("bob.pub");
    std::fs::write(&bob_pub, bob.public_key().to_openssh().unwrap()).unwrap();
    let o = cli(&["account", "key", "add", "bob", bob_pub.to_str().unwrap()])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // ... and with nothing but the data directory (`up` recorded its metadata service there).
    let o = Command::new(BIN)
        .args(["account", "list", "--data", &data])
        .env_remove("MOBULA_METADATA_URL")
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "admin\nbob\n");
    // The new account's key signs requests through the gateway.
    let bob_key = dir.path().join("bob");
    std::fs::write(&bob_key, bob.to_openssh(ssh_key::LineEnding::LF).unwrap()).unwrap();
    let o = Command::new(BIN)
        .args(["mkdir", "~~/stor/bobs"])
        .env("MOBULA_URL", get("MOBULA_URL"))
        .env("MOBULA_ACCOUNT", "bob")
        .env("MOBULA_KEY", &bob_key)
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing listening: the error says where it looked and what to do.
    let o = Command::new(BIN)
        .args(["account", "list", "--metadata-url", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("metadata service at http://127.0.0.1:9"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // S3: the AWS_* line `up` printed works with boto3, and `mobula account s3-key` manages keys
    // with what `up` printed.
    let endpoint = get("AWS_ENDPOINT_URL");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let python = std::env::var("MOBULA_BOTO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut py = Command::new(&python);
    py.args([
        "-c",
        "import boto3; s3 = boto3.client('s3'); s3.create_bucket(Bucket='from-up'); \
         print([b['Name'] for b in s3.list_buckets()['Buckets']])",
    ]);
    for (k, v) in &vars {
        py.env(k, v);
    }
    match py.output().await {
        Ok(o) if o.status.success() => {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "['from-up']")
        }
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).to_string();
            if err.contains("No module named 'boto3'") {
                crate::skip(&format!("{python} has no boto3"));
            } else {
                panic!("boto3 with up's environment: {err}");
            }
        }
        Err(e) => crate::skip(&format!("{python}: {e}")),
    }
    let o = cli(&["account", "s3-key", "create", "admin"])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let new_id = out
        .lines()
        .find_map(|l| l.strip_prefix("AWS_ACCESS_KEY_ID="))
        .unwrap()
        .to_string();
    assert!(out.contains("AWS_SECRET_ACCESS_KEY="), "{out}");
    let listed = |o: std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    let l = listed(cli(&["account", "s3-key", "list", "admin"]).await.unwrap());
    assert!(
        l.contains(&new_id) && l.contains(&get("AWS_ACCESS_KEY_ID")),
        "{l}"
    );
    assert!(
        !l.contains(&get("AWS_SECRET_ACCESS_KEY")),
        "secrets are shown once: {l}"
    );
    let o = cli(&["account", "s3-key", "remove", "admin", &new_id])
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l = listed(cli(&["account", "s3-key", "list", "admin"]).await.unwrap());
    assert!(!l.contains(&new_id), "{l}");
    // Restarted, it keeps the same key and still answers the same client.
    let pid = nix::unistd::Pid::from_raw(up.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    up.wait().await.unwrap();
    let (_up, vars2) = up_with_home(&data, &home).await;
    assert!(vars2.iter().any(|(k, v)| k == "MOBULA_KEY" && *v == key));
    let s3_key = get("AWS_ACCESS_KEY_ID");
    assert!(
        vars2
            .iter()
            .any(|(k, v)| k == "AWS_ACCESS_KEY_ID" && *v == s3_key),
        "the same S3 key after a restart"
    );
    let mut c = Command::new(BIN);
    c.args(["get", "~~/stor/f"]);
    for (k, v) in &vars2 {
        c.env(k, v);
    }
    let o = c.output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "signed");

    // A user with a key in ~/.ssh gets that key registered and printed instead.
    let ssh = home.join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    let mine =
        ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    std::fs::write(
        ssh.join("id_ed25519"),
        mine.to_openssh(ssh_key::LineEnding::LF).unwrap(),
    )
    .unwrap();
    std::fs::write(
        ssh.join("id_ed25519.pub"),
        mine.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    drop(_up);
    let data2 = dir.path().join("data2").to_string_lossy().to_string();
    let (_up, vars3) = up_with_home(&data2, &home).await;
    let key3 = vars3
        .iter()
        .find(|(k, _)| k == "MOBULA_KEY")
        .unwrap()
        .1
        .clone();
    assert_eq!(key3, ssh.join("id_ed25519").display().to_string());
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// After a burst of concurrent requests, `up` gives its descriptors back: clients' connections
/// are closed when they go, and the internal pools (gateway to nodes and metadata, nodes to
/// metadata) drop idle connections within their idle timeout.
#[tokio::test]
async fn up_gives_back_its_connections_after_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").to_string_lossy().to_string();
    let (up, url) = spawn(&[
        "up",
        "--s3-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--volume",
        "plain",
        "--no-jobs",
    ])
    .await;
    let pid = up.id().unwrap();
    let warm = reqwest::Client::new();
    wait_ok(&warm, || warm.put(format!("{url}/admin/stor/w")).body("w")).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = fds(pid);
    let burst = reqwest::Client::new();
    let reqs = (0..200).map(|i| {
        let (c, url) = (burst.clone(), url.clone());
        async move {
            let r = c
                .put(format!("{url}/admin/stor/b{i}"))
                .body(vec![1u8; 4096])
                .send()
                .await;
            assert_eq!(r.unwrap().status(), 204);
            let r = c
                .get(format!("{url}/admin/stor/b{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.bytes().await.unwrap().len(), 4096);
        }
    });
    futures::future::join_all(reqs).await;
    let peak = fds(pid);
    drop(burst);
    let t = std::time::Instant::now();
    while fds(pid) > baseline + 12 && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = fds(pid);
    assert!(
        after <= baseline + 12,
        "descriptors: {baseline} before, {peak} at the burst, {after} a minute later"
    );
    eprintln!(
        "descriptors: {baseline} before, {peak} at the burst, {after} after {:?}",
        t.elapsed()
    );
}

/// `up` on a journaled ext4 — where a small PUT's copies are written, linked and fsync'd
/// together on one call — killed with SIGKILL amid concurrent small PUTs: after a restart every
/// acknowledged object reads back whole, and no unacknowledged one is visible in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_killed_amid_small_puts_on_a_journaled_ext4_keeps_every_acknowledged_one() {
    use std::sync::{Arc, Mutex};
    let Some(fs) = mobula_storage_node::volume::loopback::TempExt4::for_test("has_journal") else {
        return;
    };
    let data = fs.mountpoint.join("data").to_string_lossy().to_string();
    let args = [
        "up",
        "--s3-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        "--no-jobs",
        "--volume",
        "plain",
    ];
    let http = reqwest::Client::new();
    let (mut up, url) = spawn(&args).await;
    wait_ok(&http, || {
        http.put(format!("{url}/admin/stor/first")).body("x")
    })
    .await;
    let body = |w: usize, i: usize| format!("{w}-{i}-").repeat(4096).into_bytes()[..4096].to_vec();
    let acked: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut sent = 0;
            for i in 0.. {
                sent = i + 1;
                let r = http
                    .put(format!("{url}/admin/stor/o{w}-{i}"))
                    .body(body(w, i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 204 => acked.lock().unwrap().push((w, i)),
                    _ => break,
                }
            }
            sent
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(std::time::Instant::now() < deadline, "PUTs too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    up.start_kill().unwrap();
    up.wait().await.unwrap();
    let mut sent = Vec::new();
    for w in writers {
        sent.push(w.await.unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    let (_up, url) = spawn(&args).await;
    wait_ok(&http, || http.get(format!("{url}/admin/stor/first"))).await;
    for &(w, i) in &acked {
        let r = http
            .get(format!("{url}/admin/stor/o{w}-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged o{w}-{i}");
        assert_eq!(r.bytes().await.unwrap(), body(w, i), "o{w}-{i}");
    }
    for (w, &n) in sent.iter().enumerate() {
        for i in 0..n {
            let r = http
                .get(format!("{url}/admin/stor/o{w}-{i}"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                404 => assert!(!acked.contains(&(w, i))),
                200 => assert_eq!(r.bytes().await.unwrap(), body(w, i), "o{w}-{i}"),
                s => panic!("o{w}-{i}: {s}"),
            }
        }
    }
}
