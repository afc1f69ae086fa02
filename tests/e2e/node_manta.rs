//! The real Node.js `manta` CLI (npm `manta` 5.4.2) against a cluster that requires signatures:
//! it signs with an RSA key from `$HOME/.ssh`, as Manta users have it. `.ci/run` installs it and
//! sets MOBULA_NODE_MANTA to its `bin` directory; elsewhere the test skips with a reason (a
//! failure under MOBULA_REQUIRE_PRIVILEGED=1, which CI sets). `mjob` waits for the jobs API.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_manta_cli_works_unchanged() {
    let Some(bin) = bin_dir() else { return };
    let t = T::start_with(3, |c| c.gateway.require_signatures = true).await;
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    let key = ssh.join("id_rsa");
    let gen = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f"])
        .arg(&key)
        .status()
        .await
        .unwrap();
    assert!(gen.success());
    let public = std::fs::read_to_string(ssh.join("id_rsa.pub")).unwrap();
    let (md5, sha256) = mobula_gateway::signature::fingerprints(&public).unwrap();
    t.c.gw.meta.create_account("alice").await.unwrap();
    t.c.gw
        .meta
        .add_key(&mobula_metadata::types::AccountKey {
            account: "alice".into(),
            md5: md5.clone(),
            sha256,
            public_key: public.trim().into(),
            created: 0,
        })
        .await
        .unwrap();
    let m = |cmd: &str, args: &[&str]| {
        let mut c = tokio::process::Command::new(bin.join(cmd));
        c.args(args)
            .env("HOME", home.path())
            .env("MANTA_URL", t.c.url())
            .env("MANTA_USER", "alice")
            .env("MANTA_KEY_ID", &md5)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MANTA_SUBUSER");
        let what = format!("{cmd} {args:?}");
        async move {
            let o = c.output().await.unwrap();
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "{what}: {}{out}",
                String::from_utf8_lossy(&o.stderr)
            );
            out
        }
    };
    let file = home.path().join("hello.txt");
    std::fs::write(&file, "hello from node-manta\n").unwrap();
    let f = file.to_str().unwrap();

    m("mmkdir", &["-p", "~~/stor/a/b"]).await;
    m("mput", &["-f", f, "~~/stor/a/hello.txt"]).await;
    assert_eq!(
        m("mget", &["~~/stor/a/hello.txt"]).await,
        "hello from node-manta\n"
    );
    let ls = m("mls", &["-l", "~~/stor/a"]).await;
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
    m("mln", &["~~/stor/a/hello.txt", "~~/stor/a/link.txt"]).await;
    assert_eq!(
        m("mget", &["~~/stor/a/link.txt"]).await,
        "hello from node-manta\n"
    );
    let info = m("minfo", &["~~/stor/a/hello.txt"]).await;
    assert!(info.starts_with("HTTP/1.1 200 OK"), "{info}");
    assert!(info.contains("content-length: 22"), "{info}");
    let found = m("mfind", &["~~/stor"]).await;
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        [
            "/alice/stor/a",
            "/alice/stor/a/b",
            "/alice/stor/a/hello.txt",
            "/alice/stor/a/link.txt"
        ]
    );
    let url = m("msign", &["~~/stor/a/hello.txt"]).await;
    let body = reqwest::get(url.trim()).await.unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().await.unwrap(), "hello from node-manta\n");
    m("mrmdir", &["~~/stor/a/b"]).await;
    m("mrm", &["-r", "~~/stor/a"]).await;
    assert_eq!(m("mls", &["~~/stor"]).await, "");
    // Unsigned requests are still refused.
    let r = reqwest::get(format!("{}/alice/stor", t.c.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
