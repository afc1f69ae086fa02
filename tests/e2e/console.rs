//! The web console: driven in headless Chromium by `tests/console/console_suite.py` (selenium),
//! with screenshots of every page kept under `target/console-screenshots/`; and its edges over
//! plain HTTP — a write without a session or without the CSRF token is refused, another
//! account's private data is not shown, the session cookie's attributes.
//!
//! Interpreter: `MOBULA_BROWSER_PYTHON` (CI: a venv with selenium; default `python3`), with
//! Debian's `chromium` and `chromium-driver`.

use reqwest::{Method, StatusCode};

use crate::{bytes, skip, T};

const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/console/console_suite.py"
);
const SHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console-screenshots");
const EVIL: &str = "<img src=x onerror=alert(1)>";

fn python() -> String {
    std::env::var("MOBULA_BROWSER_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_browser(python: &str) -> Result<(), String> {
    let selenium = std::process::Command::new(python)
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !selenium {
        return Err(format!("{python} has no selenium (pip install selenium)"));
    }
    for b in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !std::path::Path::new(b).exists() {
            return Err(format!(
                "{b} missing (apt install chromium chromium-driver)"
            ));
        }
    }
    Ok(())
}

/// A cluster with job agents, an S3 key for `admin`, and what the browser suite looks at.
async fn cluster() -> Option<(T, mobula_metadata::api::S3Key)> {
    let t = crate::jobs::cluster(3).await?;
    let key = mobula_gateway::s3::keys::generate("admin");
    t.c.gw.meta.add_s3_key(&key).await.unwrap();
    Some((t, key))
}

/// Log in over HTTP; the session cookie and the CSRF token of the first page.
async fn session(t: &T, key: &mobula_metadata::api::S3Key) -> (String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(t.url("/console/login"))
        .form(&[("access_key", &key.access_key), ("secret", &key.secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http
        .get(t.url("/console/browse/admin/stor"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("<meta name=\"csrf\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn writes_need_the_session_and_its_csrf_token_and_other_accounts_stay_private() {
    let Some((t, key)) = cluster().await else {
        return;
    };
    t.c.gw.meta.create_account("other").await.unwrap();
    assert_eq!(t.put("/other/stor/secret", "not yours").await.status(), 204);
    let (cookie, csrf) = session(&t, &key).await;
    let http = reqwest::Client::new();
    let put = |with_cookie: bool, with_csrf: Option<&str>| {
        let mut r = http
            .put(t.url("/console/api/admin/stor/via-console"))
            .body("hello");
        if with_cookie {
            r = r.header("cookie", &cookie);
        }
        if let Some(c) = with_csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    assert_eq!(put(false, Some(&csrf)).await.unwrap().status(), 401);
    assert_eq!(put(true, None).await.unwrap().status(), 403);
    assert_eq!(
        put(true, Some("0".repeat(64).as_str()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        t.get("/admin/stor/via-console").await.status(),
        404,
        "nothing written"
    );
    assert_eq!(put(true, Some(&csrf)).await.unwrap().status(), 204);
    assert_eq!(t.get_bytes("/admin/stor/via-console").await, b"hello");
    // Download through the console's API: the bytes.
    let r = http
        .get(t.url("/console/api/admin/stor/via-console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
    // A directory of 450 entries: pages of 200 linked by their marker, each entry once.
    let mkdir = t
        .req(Method::PUT, "/admin/stor/many")
        .header("content-type", "application/json; type=directory")
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), 204);
    let tr = &t;
    let puts =
        (0..450).map(|i| async move { tr.put(&format!("/admin/stor/many/e{i:04}"), "x").await });
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.status(), 204);
    }
    let mut seen = Vec::new();
    let mut next = Some("/console/browse/admin/stor/many".to_string());
    while let Some(url) = next.take() {
        let page = http
            .get(t.url(&url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("450 entries"));
        for part in page.split("class=\"name\" href=\"").skip(1) {
            let name = part.split('>').nth(1).unwrap().split('<').next().unwrap();
            seen.push(name.to_string());
        }
        next = page
            .split("id=\"next\" href=\"")
            .nth(1)
            .map(|r| r.split('"').next().unwrap().replace("&amp;", "&"));
    }
    let want: Vec<String> = (0..450).map(|i| format!("e{i:04}")).collect();
    assert_eq!(seen, want);
    // Another account's private data: neither its pages nor its bytes.
    for path in [
        "/console/browse/other/stor",
        "/console/browse/other/stor/secret",
    ] {
        let r = http
            .get(t.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(!r.text().await.unwrap().contains("not yours"));
    }
    let r = http
        .get(t.url("/console/api/other/stor/secret"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A forged cookie (right shape, wrong MAC) is no session.
    // (Flip the last hex digit: appending a fixed one would be the real MAC one time in 16.)
    let last = if cookie.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &cookie[..cookie.len() - 1]);
    assert_ne!(forged, cookie);
    let r = http
        .get(t.url("/console/api/admin/stor/via-console"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Sign-out is a write too.
    let nohttp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = nohttp
        .post(t.url("/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let py = python();
    if let Err(why) = has_browser(&py) {
        return skip(&why);
    }
    let Some((t, key)) = cluster().await else {
        return;
    };
    let evil = percent_encoding::utf8_percent_encode(EVIL, percent_encoding::NON_ALPHANUMERIC);
    assert_eq!(
        t.put(&format!("/admin/stor/{evil}"), "x").await.status(),
        204
    );
    for d in ["/admin/stor/up", "/admin/stor/texts"] {
        let r = t
            .req(Method::PUT, d)
            .header("content-type", "application/json; type=directory")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let mut words = 0;
    for i in 0..3 {
        let text = format!("{} \n", vec!["word"; 10 * (i + 1)].join(" "));
        words += text.split_whitespace().count();
        let r = t.put(&format!("/admin/stor/texts/t{i}"), text).await;
        assert_eq!(r.status(), 204);
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("twenty-mib.bin");
    let body = bytes(20 << 20, 7);
    std::fs::write(&file, &body).unwrap();
    let small_file = tmp.path().join("small key.txt");
    std::fs::write(&small_file, "into a bucket\n").unwrap();
    let env = [
        ("SMALL_FILE", small_file.display().to_string()),
        ("CONSOLE_URL", t.c.url().to_string()),
        ("ACCESS_KEY", key.access_key.clone()),
        ("SECRET", key.secret.clone()),
        ("UPLOAD_FILE", file.display().to_string()),
        ("EXPECTED_WORDS", words.to_string()),
        ("EVIL_NAME", EVIL.to_string()),
        ("SHOTS", SHOTS.to_string()),
    ];
    let out = tokio::process::Command::new(&py)
        .arg(SUITE)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The browser's upload, read back through the API: every byte, as a multipart upload's
    // object (its parts concatenated on the nodes).
    let got = t.get_bytes("/admin/stor/up/twenty-mib.bin").await;
    assert!(got == body, "the uploaded bytes differ");
    let key = t
        .get_bytes("/admin/buckets/console-bucket/objects/small%20key.txt")
        .await;
    assert_eq!(key, b"into a bucket\n");
    assert_eq!(
        t.get("/admin/stor/linked-t1").await.status(),
        404,
        "deleted"
    );
    assert_eq!(
        t.get("/admin/stor/texts/t1").await.status(),
        200,
        "its source kept"
    );
    assert_eq!(t.get("/admin/stor/made-here").await.status(), 200);
    for page in [
        "login",
        "browse",
        "upload",
        "object",
        "job",
        "job-error",
        "bucket",
        "cluster",
    ] {
        let p = std::path::Path::new(SHOTS).join(format!("{page}.png"));
        assert!(
            p.metadata().is_ok_and(|m| m.len() > 1000),
            "{}",
            p.display()
        );
    }
}

/// A directory of 100,000 entries (rows written straight to the metadata service: no bytes
/// behind them): the console pages it from any marker, each page the next 200 names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_100000_entries_pages_from_any_marker() {
    use mobula_metadata::api::{Data, PutObject};
    let t = T::start(3).await;
    let key = mobula_gateway::s3::keys::generate("admin");
    t.c.gw.meta.add_s3_key(&key).await.unwrap();
    t.c.gw.meta.mkdir("/admin/stor/huge").await.unwrap();
    let meta = t.c.gw.meta.clone();
    let writers = (0..64u64).map(|w| {
        let meta = meta.clone();
        tokio::spawn(async move {
            for i in (w..100_000).step_by(64) {
                let p = PutObject {
                    parents: false,
                    path: format!("/admin/stor/huge/e{i:06}"),
                    data: Data {
                        id: format!("{i:032x}"),
                        size: 1,
                        md5: "x".into(),
                        blake3: "x".into(),
                        durability: 1,
                        nodes: Vec::new(),
                    },
                    content_type: "text/plain".into(),
                    headers: Default::default(),
                    preconditions: Default::default(),
                };
                meta.put_object(&p).await.unwrap();
            }
        })
    });
    for w in futures::future::join_all(writers).await {
        w.unwrap();
    }
    let (cookie, _) = session(&t, &key).await;
    let http = reqwest::Client::new();
    let page = |url: String| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            let r = http.get(url).header("cookie", cookie).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let names = |html: &str| -> Vec<String> {
        html.split("class=\"name\" href=\"")
            .skip(1)
            .map(|p| {
                p.split('>')
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let first = page(t.url("/console/browse/admin/stor/huge")).await;
    assert!(first.contains("100000 entries"));
    let want = |from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("e{i:06}")).collect()
    };
    assert_eq!(names(&first), want(0, 200));
    let next = first
        .split("id=\"next\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert_eq!(names(&page(t.url(&next)).await), want(200, 200));
    let deep = page(t.url("/console/browse/admin/stor/huge?marker=e073117")).await;
    assert_eq!(names(&deep), want(73117, 200));
    let last = page(t.url("/console/browse/admin/stor/huge?marker=e099900")).await;
    assert_eq!(names(&last), want(99900, 100));
    assert!(!last.contains("id=\"next\""), "the last page links nowhere");
}
