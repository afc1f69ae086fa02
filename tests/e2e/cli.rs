//! The client CLI (`mobula put/get/ls/mkdir/rm/ln/info`) against a real cluster.

use std::process::Output;

use crate::{bytes, T};

const BIN: &str = env!("CARGO_BIN_EXE_mobula");

async fn run(t: &T, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("MOBULA_URL", t.c.url())
        .env("MOBULA_ACCOUNT", "admin")
        .output()
        .await
        .unwrap()
}

async fn ok(t: &T, args: &[&str]) -> String {
    let o = run(t, args).await;
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn cli_round_trip() {
    let t = T::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let body = bytes(3 << 20, 4);
    std::fs::write(&src, &body).unwrap();
    ok(&t, &["mkdir", "-p", "~~/stor/a/b/c"]).await;
    ok(
        &t,
        &[
            "put",
            src.to_str().unwrap(),
            "~~/stor/a/b/c/obj",
            "-H",
            "m-x: 1",
            "-c",
            "3",
        ],
    )
    .await;
    ok(
        &t,
        &["put", "-p", src.to_str().unwrap(), "/admin/stor/p/q/obj2"],
    )
    .await;
    let out = dir.path().join("out.bin");
    ok(&t, &["get", "/admin/stor/a/b/c/obj", out.to_str().unwrap()]).await;
    assert!(std::fs::read(&out).unwrap() == body);
    let ls = ok(&t, &["ls", "/admin/stor/a"]).await;
    assert_eq!(ls, "b/\n");
    let ls = ok(&t, &["ls", "-l", "/admin/stor/a/b/c"]).await;
    assert!(
        ls.starts_with('-')
            && ls.contains(&(3 << 20).to_string())
            && ls.trim_end().ends_with("obj"),
        "{ls}"
    );
    let info = ok(&t, &["info", "/admin/stor/a/b/c/obj"]).await;
    assert!(
        info.contains("m-x: 1") && info.contains("durability-level: 3"),
        "{info}"
    );
    ok(&t, &["ln", "/admin/stor/a/b/c/obj", "/admin/stor/link"]).await;
    let got = run(&t, &["get", "/admin/stor/link"]).await;
    assert!(got.stdout == body);
    // Errors print the server's code and message and exit non-zero.
    let o = run(&t, &["rm", "/admin/stor/a"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("DirectoryNotEmpty"), "{err}");
    ok(&t, &["rm", "-r", "/admin/stor/a"]).await;
    let o = run(&t, &["get", "/admin/stor/a/b/c/obj"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ResourceNotFound"));
    let ls = ok(&t, &["ls", "/admin/stor"]).await;
    assert_eq!(ls, "link\np/\n");
}

#[tokio::test]
async fn cli_on_bucket_paths() {
    let t = T::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let body = bytes(1 << 20, 9);
    std::fs::write(&src, &body).unwrap();
    ok(&t, &["mkdir", "~~/buckets/cli-bucket"]).await;
    let file = src.to_str().unwrap();
    ok(&t, &["put", file, "~~/buckets/cli-bucket/objects/x/y.bin"]).await;
    ok(&t, &["put", file, "/admin/buckets/cli-bucket/objects/top"]).await;
    assert_eq!(ok(&t, &["ls", "/admin/buckets"]).await, "cli-bucket/\n");
    let ls = ok(&t, &["ls", "/admin/buckets/cli-bucket"]).await;
    assert_eq!(ls, "top\nx/y.bin\n");
    let out = dir.path().join("out.bin");
    let key = "/admin/buckets/cli-bucket/objects/x/y.bin";
    ok(&t, &["get", key, out.to_str().unwrap()]).await;
    assert!(std::fs::read(&out).unwrap() == body);
    let info = ok(&t, &["info", key]).await;
    assert!(info.contains("content-length: 1048576"), "{info}");
    // A bucket with objects is not removed without -r; with it, keys then the bucket.
    assert!(!run(&t, &["rm", "/admin/buckets/cli-bucket"])
        .await
        .status
        .success());
    ok(&t, &["rm", "-r", "/admin/buckets/cli-bucket"]).await;
    assert_eq!(ok(&t, &["ls", "/admin/buckets"]).await, "");
}

/// `mobula … | head`: the client ends quietly when its reader goes away (SIGPIPE), no panic.
#[tokio::test]
async fn a_client_piped_into_a_closed_reader_ends_quietly() {
    let t = T::start(3).await;
    let lines: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("lines.txt");
    std::fs::write(&src, &lines).unwrap();
    ok(&t, &["put", src.to_str().unwrap(), "/admin/stor/lines.txt"]).await;
    for args in ["get /admin/stor/lines.txt", "info /admin/stor/lines.txt"] {
        let script = format!("'{BIN}' {args} | head -c 1 > /dev/null; echo \"${{PIPESTATUS[0]}}\"");
        let o = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("MOBULA_URL", t.c.url())
            .env("MOBULA_ACCOUNT", "admin")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
        // Done before the pipe closed (0), or ended by SIGPIPE (128 + 13): never a failure.
        let status = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            status == "0" || status == "141",
            "{args}: exit {status}, {stderr}"
        );
    }
}
