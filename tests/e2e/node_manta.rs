//! The real Node.js `manta` CLI (npm `manta` 5.4.2) against a cluster that requires signatures:
//! it signs with an RSA key from `$HOME/.ssh`, as Manta users have it, or an Ed25519 one. `.ci/run` installs it and
//! sets MOBULA_NODE_MANTA to its `bin` directory; elsewhere the test skips with a reason (a
//! failure under MOBULA_REQUIRE_PRIVILEGED=1, which CI sets). `mjob` runs jobs as her (needs root for the sandboxes).

use std::path::{Path, PathBuf};

use crate::T;

fn bin_dir() -> Option<PathBuf> {
    match std::env::var_os("MOBULA_NODE_MANTA") {
        Some(d) if Path::new(&d).join("mls").exists() => Some(d.into()),
        _ => {
            let why = "node-manta not installed (npm install manta@5.4.2; MOBULA_NODE_MANTA=<its bin dir>)";
            crate::skip(why);
            None
        }
    }
}

/// Account `alice` with an RSA key in a fresh `$HOME/.ssh`, and a runner of node-manta commands
/// as her.
struct Manta {
    bin: PathBuf,
    home: tempfile::TempDir,
    md5: String,
    url: String,
}

impl Manta {
    async fn new(bin: PathBuf, t: &T) -> Manta {
        Self::with_key(bin, t, &["-t", "rsa", "-b", "2048", "-m", "PEM"], "id_rsa").await
    }

    /// The same with the key `ssh-keygen ARGS` makes as `$HOME/.ssh/NAME`.
    async fn with_key(bin: PathBuf, t: &T, args: &[&str], name: &str) -> Manta {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let key = ssh.join(name);
        let gen = tokio::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-f"])
            .arg(&key)
            .args(args)
            .status()
            .await
            .unwrap();
        assert!(gen.success());
        let public = std::fs::read_to_string(ssh.join(format!("{name}.pub"))).unwrap();
        let (md5, sha256) = mobula_metadata::api::fingerprints(&public).unwrap();
        t.c.gw.meta.create_account("alice").await.unwrap();
        t.c.gw
            .meta
            .add_key(&mobula_metadata::api::AccountKey {
                account: "alice".into(),
                md5: md5.clone(),
                sha256,
                public_key: public.trim().into(),
                created: 0,
            })
            .await
            .unwrap();
        Manta {
            bin,
            home,
            md5,
            url: t.c.url().to_string(),
        }
    }

    /// Run `cmd args` (with `stdin`); its stdout, asserting it succeeded.
    async fn run(&self, cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut c = tokio::process::Command::new(self.bin.join(cmd));
        c.args(args)
            .env("HOME", self.home.path())
            .env("MANTA_URL", &self.url)
            .env("MANTA_USER", "alice")
            .env("MANTA_KEY_ID", &self.md5)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MANTA_SUBUSER");
        let (ok, out, err) = crate::run_with_stdin(c, stdin.unwrap_or("")).await;
        assert!(ok, "{cmd} {args:?}: {err}{out}");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_manta_cli_works_unchanged() {
    let Some(bin) = bin_dir() else { return };
    let t = T::start_with(3, |c| c.gateway.require_signatures = true).await;
    let manta = Manta::new(bin, &t).await;
    let home = manta.home.path();
    let file = home.join("hello.txt");
    std::fs::write(&file, "hello from node-manta\n").unwrap();
    let f = file.to_str().unwrap();

    manta.run("mmkdir", &["-p", "~~/stor/a/b"], None).await;
    manta
        .run("mput", &["-f", f, "~~/stor/a/hello.txt"], None)
        .await;
    assert_eq!(
        manta.run("mget", &["~~/stor/a/hello.txt"], None).await,
        "hello from node-manta\n"
    );
    let ls = manta.run("mls", &["-l", "~~/stor/a"], None).await;
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 2, "{ls}");
    assert!(
        lines[0].starts_with('d') && lines[0].ends_with(" b"),
        "{ls}"
    );
    assert!(
        lines[1].starts_with('-') && lines[1].ends_with(" hello.txt"),
        "{ls}"
    );
    assert!(lines[1].contains(" 22 "), "size column: {ls}");
    manta
        .run("mln", &["~~/stor/a/hello.txt", "~~/stor/a/link.txt"], None)
        .await;
    assert_eq!(
        manta.run("mget", &["~~/stor/a/link.txt"], None).await,
        "hello from node-manta\n"
    );
    let info = manta.run("minfo", &["~~/stor/a/hello.txt"], None).await;
    assert!(info.starts_with("HTTP/1.1 200 OK"), "{info}");
    assert!(info.contains("content-length: 22"), "{info}");
    let found = manta.run("mfind", &["~~/stor"], None).await;
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        [
            "/alice/stor/a",
            "/alice/stor/a/b",
            "/alice/stor/a/hello.txt",
            "/alice/stor/a/link.txt"
        ]
    );
    let url = manta.run("msign", &["~~/stor/a/hello.txt"], None).await;
    let body = reqwest::get(url.trim()).await.unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().await.unwrap(), "hello from node-manta\n");
    manta.run("mrmdir", &["~~/stor/a/b"], None).await;
    manta.run("mrm", &["-r", "~~/stor/a"], None).await;
    assert_eq!(manta.run("mls", &["~~/stor"], None).await, "");
    // Unsigned requests are still refused.
    let r = reqwest::get(format!("{}/alice/stor", t.c.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjob_runs_jobs_as_the_signed_account() {
    let Some(bin) = bin_dir() else { return };
    let Some(t) = crate::jobs::cluster_with(3, |c| c.gateway.require_signatures = true).await
    else {
        return;
    };
    let manta = Manta::new(bin, &t).await;
    let dir = manta.home.path();
    manta.run("mmkdir", &["-p", "~~/stor/txt"], None).await;
    for (i, body) in ["one two three\n", "four five\nsix\n"].iter().enumerate() {
        let f = dir.join(format!("{i}.txt"));
        std::fs::write(&f, body).unwrap();
        let dst = format!("~~/stor/txt/{i}.txt");
        manta
            .run("mput", &["-f", f.to_str().unwrap(), &dst], None)
            .await;
    }
    let inputs = "/alice/stor/txt/0.txt\n/alice/stor/txt/1.txt\n";
    let reduce = "awk '{s+=$1} END {print s}'";
    let id = manta
        .run(
            "mjob",
            &["create", "-m", "wc -w", "-r", reduce],
            Some(inputs),
        )
        .await;
    let id = id.trim();
    let watched = manta.run("mjob", &["watch", id], None).await;
    assert!(watched.contains("\"state\": \"done\""), "{watched}");
    let outs = manta.run("mjob", &["outputs", id], None).await;
    let outs: Vec<&str> = outs.lines().collect();
    assert_eq!(outs.len(), 1, "{outs:?}");
    assert!(outs[0].starts_with(&format!("/alice/jobs/{id}/stor/")));
    assert_eq!(manta.run("mget", &[outs[0]], None).await, "6\n");
    assert_eq!(manta.run("mjob", &["errors", id], None).await, "");
    // A failing task, and an input of another account: error records, read with mjob errors.
    t.c.gw.meta.create_account("bob").await.unwrap();
    let inputs = "/alice/stor/txt/0.txt\n/bob/stor/secret\n";
    let id = manta
        .run(
            "mjob",
            &["create", "-m", "echo oops >&2; exit 3"],
            Some(inputs),
        )
        .await;
    let id = id.trim();
    manta.run("mjob", &["watch", id], None).await;
    let errs = manta.run("mjob", &["errors", id], None).await;
    let errs: Vec<serde_json::Value> = errs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    let user = errs.iter().find(|e| e["code"] == "UserTaskError").unwrap();
    assert_eq!(
        manta
            .run("mget", &[user["stderr"].as_str().unwrap()], None)
            .await,
        "oops\n"
    );
    let other = errs
        .iter()
        .find(|e| e["input"] == "/bob/stor/secret")
        .unwrap();
    assert_eq!(other["code"], "ResourceNotFoundError");
    // Nobody else reads her jobs.
    let r = reqwest::get(format!("{}/alice/jobs/{id}/live/status", t.c.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(format!("{}/alice/jobs", t.c.url()))
        .body(r#"{"phases":[{"exec":"cat"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// An Ed25519 key, as `mobula up` generates one: node-manta names its signatures
/// "ed25519-sha512", and they verify (headers and signed URLs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_manta_signs_with_an_ed25519_key() {
    let Some(bin) = bin_dir() else { return };
    let t = T::start_with(3, |c| c.gateway.require_signatures = true).await;
    let manta = Manta::with_key(bin, &t, &["-t", "ed25519"], "id_ed25519").await;
    let file = manta.home.path().join("hello.txt");
    std::fs::write(&file, "signed with ed25519\n").unwrap();
    manta.run("mmkdir", &["-p", "~~/stor/e"], None).await;
    let f = file.to_str().unwrap();
    manta
        .run("mput", &["-f", f, "~~/stor/e/hello.txt"], None)
        .await;
    let got = manta.run("mget", &["~~/stor/e/hello.txt"], None).await;
    assert_eq!(got, "signed with ed25519\n");
    let url = manta.run("msign", &["~~/stor/e/hello.txt"], None).await;
    assert!(
        url.to_ascii_lowercase().contains("algorithm=ed25519"),
        "{url}"
    );
    let r = reqwest::get(url.trim()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "signed with ed25519\n");
}
