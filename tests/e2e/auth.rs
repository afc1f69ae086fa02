//! Signed requests (SPEC §6) against a gateway that requires them: who may do what, every bad
//! credential with its status and code, signed URLs, and the CLI signing with a key file.

use std::time::{Duration, SystemTime};

use mobula::sign::Signer;
use reqwest::Method;
use ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey};

use crate::{assert_err, T};

struct Who {
    signer: Signer,
    private: String,
}

async fn account(t: &T, name: &str, alg: Algorithm) -> Who {
    let key = PrivateKey::random(&mut rand::rngs::OsRng, alg).unwrap();
    let public = key.public_key().to_openssh().unwrap();
    let (md5, sha256) = mobula_metadata::api::fingerprints(&public).unwrap();
    t.c.gw.meta.create_account(name).await.unwrap();
    t.c.gw
        .meta
        .add_key(&mobula_metadata::api::AccountKey {
            account: name.into(),
            md5,
            sha256,
            public_key: public,
            created: 0,
        })
        .await
        .unwrap();
    let private = key.to_openssh(LineEnding::LF).unwrap().to_string();
    Who {
        signer: Signer::from_openssh(&private, name).unwrap(),
        private,
    }
}

fn signed(t: &T, who: &Signer, m: Method, path: &str) -> reqwest::RequestBuilder {
    let date = httpdate::fmt_http_date(SystemTime::now());
    t.req(m, path)
        .header("date", &date)
        .header("authorization", who.authorization(&date))
}

async fn start() -> (T, Who, Who) {
    let t = T::start_with(3, |c| c.gateway.require_signatures = true).await;
    let alice = account(&t, "alice", Algorithm::Ed25519).await;
    let bob = account(
        &t,
        "bob",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    )
    .await;
    (t, alice, bob)
}

#[tokio::test]
async fn owners_anonymous_readers_and_other_accounts() {
    let (t, alice, bob) = start().await;
    let a = &alice.signer;
    assert_eq!(
        signed(&t, a, Method::PUT, "/alice/stor/secret")
            .body("s")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        signed(&t, a, Method::PUT, "/alice/public/open")
            .body("o")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        signed(&t, a, Method::GET, "/alice/stor/secret")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "s"
    );
    // Anonymous: public reads only.
    assert_eq!(t.get("/alice/public/open").await.text().await.unwrap(), "o");
    assert_err(
        t.get("/alice/stor/secret").await,
        401,
        "AuthorizationRequired",
    )
    .await;
    assert_err(
        t.put("/alice/public/open", "x").await,
        401,
        "AuthorizationRequired",
    )
    .await;
    // Bob, properly signed as bob, can do nothing to alice's private data.
    let b = &bob.signer;
    assert_eq!(
        signed(&t, b, Method::PUT, "/bob/stor/mine")
            .body("b")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    for (m, path) in [
        (Method::GET, "/alice/stor"),
        (Method::GET, "/alice/stor/secret"),
        (Method::HEAD, "/alice/stor/secret"),
        (Method::PUT, "/alice/stor/secret"),
        (Method::DELETE, "/alice/stor/secret"),
        (Method::PUT, "/alice/public/open"),
    ] {
        let r = signed(&t, b, m.clone(), path)
            .body("evil")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{m} {path}");
    }
    assert_err(
        signed(&t, b, Method::GET, "/alice/stor/secret")
            .send()
            .await
            .unwrap(),
        403,
        "AuthorizationFailed",
    )
    .await;
    // Linking from alice's stor into bob's area, as bob.
    let r = signed(&t, b, Method::PUT, "/bob/stor/stolen")
        .header("content-type", "application/json; type=link")
        .header("location", "/alice/stor/secret")
        .send()
        .await
        .unwrap();
    assert_err(r, 403, "AuthorizationFailed").await;
    assert_eq!(
        signed(&t, a, Method::GET, "/alice/stor/secret")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "s"
    );
}

#[tokio::test]
async fn bad_credentials_each_get_their_code() {
    let (t, alice, bob) = start().await;
    let a = &alice.signer;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let good = a.authorization(&date);
    let send = |auth: String, date: String| {
        t.req(Method::GET, "/alice/stor")
            .header("authorization", auth)
            .header("date", date)
            .send()
    };
    // A good request first (its signature is then remembered as verified), then the same
    // with one signature character changed: refused, remembered or not.
    assert_eq!(
        send(good.clone(), date.clone()).await.unwrap().status(),
        200
    );
    let at = good.find("signature=\"").unwrap() + "signature=\"".len() + 5;
    let c = if &good[at..at + 1] == "A" { "B" } else { "A" };
    let flipped = format!("{}{c}{}", &good[..at], &good[at + 1..]);
    assert_err(
        send(flipped, date.clone()).await.unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    assert_eq!(
        send(good.clone(), date.clone()).await.unwrap().status(),
        200
    );
    assert_err(
        send("Basic Zm9vOmJhcg==".into(), date.clone())
            .await
            .unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    assert_err(
        send(good[..good.len() / 2].into(), date.clone())
            .await
            .unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    assert_err(
        send(
            good.replace("signature=\"", "signature=\"AAAA"),
            date.clone(),
        )
        .await
        .unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    // Signed over another date than the one sent.
    let other = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(10));
    assert_err(
        send(a.authorization(&other), date.clone()).await.unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    // Old, future and missing dates.
    for off in [-400i64, 400] {
        let when = if off < 0 {
            SystemTime::now() - Duration::from_secs(400)
        } else {
            SystemTime::now() + Duration::from_secs(400)
        };
        let d = httpdate::fmt_http_date(when);
        assert_err(
            send(a.authorization(&d), d).await.unwrap(),
            403,
            "RequestExpired",
        )
        .await;
    }
    let r = t
        .req(Method::GET, "/alice/stor")
        .header("authorization", good.clone())
        .send()
        .await
        .unwrap();
    assert_err(r, 403, "InvalidSignature").await;
    // Unknown key, another account's key, traversal in the keyId, unknown account.
    let unknown = good.replace(
        a.key_id.as_str(),
        "/alice/keys/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
    );
    assert_err(
        send(unknown, date.clone()).await.unwrap(),
        403,
        "KeyDoesNotExist",
    )
    .await;
    let bob_as_alice = bob
        .signer
        .authorization(&date)
        .replace("/bob/keys/", "/alice/keys/");
    assert_err(
        send(bob_as_alice, date.clone()).await.unwrap(),
        403,
        "KeyDoesNotExist",
    )
    .await;
    let traversal = good.replace(a.key_id.as_str(), "/alice/keys/../../etc/passwd");
    assert_err(
        send(traversal, date.clone()).await.unwrap(),
        403,
        "InvalidKeyId",
    )
    .await;
    let ghost = good.replace("/alice/keys/", "/ghost/keys/");
    assert_err(
        send(ghost, date.clone()).await.unwrap(),
        403,
        "AccountDoesNotExist",
    )
    .await;
    let huge = format!("{good},x=\"{}\"", "y".repeat(9000));
    assert_err(
        send(huge, date.clone()).await.unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    // None of this created anything.
    assert_eq!(
        send(good, date).await.unwrap().headers()["result-set-size"],
        "0"
    );
}

#[tokio::test]
async fn signed_urls_and_the_cli() {
    let (t, alice, _bob) = start().await;
    let a = &alice.signer;
    assert_eq!(
        signed(&t, a, Method::PUT, "/alice/stor/doc")
            .body("shared")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let url = a.sign_url(t.c.url(), "/alice/stor/doc", expires);
    assert_eq!(
        reqwest::get(&url).await.unwrap().text().await.unwrap(),
        "shared"
    );
    let tampered = url.replace("/alice/stor/doc", "/alice/stor/other");
    assert_err(
        reqwest::get(&tampered).await.unwrap(),
        403,
        "InvalidSignature",
    )
    .await;
    let old = a.sign_url(t.c.url(), "/alice/stor/doc", expires - 120);
    assert_err(reqwest::get(&old).await.unwrap(), 403, "RequestExpired").await;
    let put = reqwest::Client::new()
        .put(&url)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_err(put, 403, "InvalidSignature").await;

    // The CLI signs with a key file.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, &alice.private).unwrap();
    let run = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
            .args(args)
            .env("MOBULA_URL", t.c.url())
            .env("MOBULA_ACCOUNT", "alice")
            .env("MOBULA_KEY", &key)
            .output()
    };
    let src = dir.path().join("f");
    std::fs::write(&src, "from the cli").unwrap();
    assert!(run(&["put", src.to_str().unwrap(), "~~/stor/cli"])
        .await
        .unwrap()
        .status
        .success());
    let o = run(&["get", "~~/stor/cli"]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from the cli");
    let o = run(&["sign", "~~/stor/cli", "--expires", "60"])
        .await
        .unwrap();
    let url = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        reqwest::get(url.trim())
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "from the cli"
    );
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
        .args(["get", "/alice/stor/cli"])
        .env("MOBULA_URL", t.c.url())
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("AuthorizationRequired"));
}

// Multi-threaded: generating the RSA key must not stall the in-process nodes' heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_signs_with_keys_held_by_ssh_agent() {
    let (t, alice, bob) = start().await;
    let carol = account(&t, "carol", Algorithm::Rsa { hash: None }).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let out = tokio::process::Command::new("ssh-agent")
        .arg("-a")
        .arg(&sock)
        .output()
        .await
        .expect("ssh-agent (openssh-client) is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid: i32 = text
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .expect("agent pid");
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let _agent = Kill(pid);
    let mut fingerprints = Vec::new();
    for (i, who) in [&alice, &bob, &carol].into_iter().enumerate() {
        let key = dir.path().join(format!("id{i}"));
        std::fs::write(&key, &who.private).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let add = tokio::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .await
            .unwrap();
        assert!(
            add.status.success(),
            "{}",
            String::from_utf8_lossy(&add.stderr)
        );
        let public = PrivateKey::from_openssh(&who.private)
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap();
        fingerprints.push(mobula_metadata::api::fingerprints(&public).unwrap());
    }
    let src = dir.path().join("f");
    std::fs::write(&src, "signed by the agent").unwrap();
    // alice by MD5, bob (ECDSA P-256) by SHA256, carol (RSA) via MANTA_KEY_ID.
    for (account, var, fp) in [
        ("alice", "MOBULA_KEY_ID", fingerprints[0].0.clone()),
        ("bob", "MOBULA_KEY_ID", fingerprints[1].1.clone()),
        ("carol", "MANTA_KEY_ID", fingerprints[2].0.clone()),
    ] {
        let run = |args: Vec<String>| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
                .args(args)
                .env("MOBULA_URL", t.c.url())
                .env("MOBULA_ACCOUNT", account)
                .env("SSH_AUTH_SOCK", &sock)
                .env(var, &fp)
                .env_remove("MOBULA_KEY")
                .output()
        };
        let put = run(vec![
            "put".into(),
            src.display().to_string(),
            "~~/stor/a".into(),
        ])
        .await
        .unwrap();
        assert!(
            put.status.success(),
            "{account}: {}",
            String::from_utf8_lossy(&put.stderr)
        );
        let get = run(vec!["get".into(), "~~/stor/a".into()]).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&get.stdout),
            "signed by the agent",
            "{account}"
        );
    }
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
        .args(["get", "/alice/stor/a"])
        .env("MOBULA_URL", t.c.url())
        .env("MOBULA_ACCOUNT", "alice")
        .env("SSH_AUTH_SOCK", &sock)
        .env(
            "MOBULA_KEY_ID",
            "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
        )
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no key"));
}

/// Key files as `ssh-keygen` writes them in every format (PKCS#1 `-m PEM` RSA, SEC1 ECDSA,
/// PKCS#8), used by `--key`, and found in `~/.ssh` by fingerprint when no agent holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_every_private_key_form_and_finds_keys_in_dot_ssh() {
    let t = T::start_with(3, |c| c.gateway.require_signatures = true).await;
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir(&ssh).unwrap();
    let src = home.path().join("f");
    std::fs::write(&src, "pem").unwrap();
    for (i, (kind, format)) in [
        ("rsa", "PEM"),
        ("ecdsa", "PEM"),
        ("rsa", "PKCS8"),
        ("ed25519", "RFC4716"),
    ]
    .into_iter()
    .enumerate()
    {
        let account = format!("pem{i}");
        let key = ssh.join(format!("id_{kind}_{i}"));
        let gen = tokio::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", kind, "-m", format, "-f"])
            .arg(&key)
            .output()
            .await
            .expect("ssh-keygen (openssh-client) is installed");
        assert!(
            gen.status.success(),
            "{}",
            String::from_utf8_lossy(&gen.stderr)
        );
        let text = std::fs::read_to_string(&key).unwrap();
        if format == "PEM" && kind == "rsa" {
            assert!(
                text.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
                "{text}"
            );
        }
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap_or_else(|_| {
            let mut p = key.clone().into_os_string();
            p.push(".pub");
            std::fs::read_to_string(p).unwrap()
        });
        let (md5, sha256) = mobula_metadata::api::fingerprints(&public).unwrap();
        t.c.gw.meta.create_account(&account).await.unwrap();
        t.c.gw
            .meta
            .add_key(&mobula_metadata::api::AccountKey {
                account: account.clone(),
                md5: md5.clone(),
                sha256,
                public_key: public.trim().into(),
                created: 0,
            })
            .await
            .unwrap();
        let cli = |args: &[&str]| {
            let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"));
            c.args(args)
                .env("MOBULA_URL", t.c.url())
                .env("MOBULA_ACCOUNT", &account)
                .env("HOME", home.path())
                .env_remove("SSH_AUTH_SOCK")
                .env_remove("MOBULA_KEY")
                .env_remove("MOBULA_KEY_ID")
                .env_remove("MANTA_KEY_ID");
            c
        };
        // --key with the file.
        let o = cli(&["put", src.to_str().unwrap(), "~~/stor/a"])
            .arg("--key")
            .arg(&key)
            .output()
            .await
            .unwrap();
        assert!(
            o.status.success(),
            "{kind} {format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // MANTA_KEY_ID and no agent: found in ~/.ssh.
        let o = cli(&["get", "~~/stor/a"])
            .env("MANTA_KEY_ID", &md5)
            .output()
            .await
            .unwrap();
        assert!(
            o.status.success(),
            "{kind} {format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.stdout, b"pem");
    }
    // An encrypted key file: a clear word on what to do.
    let enc = home.path().join("enc");
    let gen = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "secret", "-t", "ed25519", "-f"])
        .arg(&enc)
        .output()
        .await
        .unwrap();
    assert!(gen.status.success());
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
        .args(["get", "/pem0/stor/a", "--key"])
        .arg(&enc)
        .env("MOBULA_URL", t.c.url())
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("encrypted") && err.contains("ssh-add"),
        "{err}"
    );
    // A fingerprint nobody holds: a clear error naming where it looked.
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobula"))
        .args(["get", "/pem0/stor/a"])
        .env("MOBULA_URL", t.c.url())
        .env("MOBULA_ACCOUNT", "pem0")
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("MOBULA_KEY")
        .env(
            "MOBULA_KEY_ID",
            "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
        )
        .output()
        .await
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no key with fingerprint") && err.contains(".ssh"),
        "{err}"
    );
}
