//! The S3 GET fast path (ARCHITECTURE.md, "The S3 GET fast path"): a plain GetObject — signed
//! in a header or presigned — is answered without s3s, with exactly the status, headers and
//! bytes s3s answers; every other request, and every wrong one, still gets s3s's answer.
//!
//! Each GET is sent twice: as is (the fast path takes it: its counter moves) and with one extra
//! unsigned header the fast path does not know (s3s answers: the counter stays), and the two
//! answers are compared.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mobula_gateway::s3::S3Config;

use crate::s3::start_with;
use crate::s3_signed::{signer, sigv4};

/// A key, its bytes, and the headers it is written with.
type Object = (&'static str, Vec<u8>, Vec<(&'static str, &'static str)>);

/// Status, headers (but the date and the request id) and body of a response.
async fn answer(r: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = r.status().as_u16();
    let mut h: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "x-amz-request-id"))
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    h.sort();
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn code(body: &[u8]) -> String {
    let b = String::from_utf8_lossy(body);
    b.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_gets_skip_s3s_and_answer_exactly_as_s3s_does() {
    let cfg = S3Config {
        fast_get: true,
        ..S3Config::default()
    };
    let served = cfg.fast_served.clone();
    let (_t, env) = start_with(None, cfg).await;
    let (s, host) = signer(&env);
    let http = reqwest::Client::new();
    let r = http
        .put(s.presign("PUT", "fast", "", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Objects with every header a GET returns, sizes around the block size, odd keys.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i % 251) as u8)
        .collect();
    let objects: Vec<Object> = vec![
        ("small", b"hello".to_vec(), vec![]),
        ("empty", Vec::new(), vec![]),
        ("dir/a b ü+~.txt", b"odd key".to_vec(), vec![]),
        ("big", big, vec![("content-type", "application/x-big")]),
        (
            "dressed",
            b"{\"a\":1}".to_vec(),
            vec![
                ("content-type", "application/json"),
                ("cache-control", "max-age=60"),
                ("content-disposition", "attachment; filename=\"d.json\""),
                ("content-encoding", "identity"),
                ("content-language", "en"),
                ("expires", "Wed, 21 Oct 2026 07:28:00 GMT"),
                ("x-amz-meta-color", "blue"),
                ("x-amz-meta-two-words", "a  b"),
                ("x-amz-checksum-crc32", "Vhusrw=="),
            ],
        ),
    ];
    for (key, body, headers) in &objects {
        let mut req = http
            .put(s.presign("PUT", "fast", key, &[]))
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}: {}", r.text().await.unwrap());
    }
    // Each object whole, and (but the empty one, where no range fits: s3s's 416) three ranges.
    let mut cases: Vec<(&str, Option<&str>, Vec<u8>)> = Vec::new();
    for (key, body, _) in &objects {
        cases.push((key, None, body.clone()));
        if body.len() >= 4 {
            cases.push((key, Some("bytes=1-3"), body[1..4].to_vec()));
            cases.push((key, Some("bytes=-2"), body[body.len() - 2..].to_vec()));
            cases.push((key, Some("bytes=2-"), body[2..].to_vec()));
        }
    }
    let mut fast = 0;
    for (key, range, want) in &cases {
        for checksums in [false, true] {
            for presigned in [true, false] {
                let send = |slow: bool| {
                    let mut req = if presigned {
                        http.get(s.presign("GET", "fast", key, &[]))
                    } else {
                        let (url, hs) = s.signed_get("fast", key);
                        let mut r = http.get(url);
                        for (k, v) in hs {
                            r = r.header(k, v);
                        }
                        r
                    };
                    if checksums {
                        req = req.header("x-amz-checksum-mode", "ENABLED");
                    }
                    if let Some(r) = range {
                        req = req.header("range", *r);
                    }
                    if slow {
                        req = req.header("x-mobula-test", "to s3s");
                    }
                    req.send()
                };
                let before = served.load(Ordering::SeqCst);
                let via_s3s = answer(send(true).await.unwrap()).await;
                assert_eq!(served.load(Ordering::SeqCst), before, "{key}: s3s answered");
                let here = answer(send(false).await.unwrap()).await;
                let took = served.load(Ordering::SeqCst) - before;
                assert_eq!(took, 1, "{key} {range:?}: the fast path answered");
                fast += 1;
                let status = if range.is_some() { 206 } else { 200 };
                assert_eq!((here.0, &here.2), (status, want), "{key} {range:?}");
                assert_eq!(here.1, via_s3s.1, "{key} {range:?} presigned={presigned}");
                assert_eq!(here, via_s3s, "{key} {range:?}");
                if *key == "dressed" && checksums && range.is_none() {
                    let crc = ("x-amz-checksum-crc32".to_string(), "Vhusrw==".to_string());
                    assert!(here.1.contains(&crc));
                    assert!(here.1.contains(&("x-amz-meta-color".into(), "blue".into())));
                }
            }
        }
    }
    assert_eq!(served.load(Ordering::SeqCst), fast);
    check_refusals(&http, &s, &host, &served).await;
}

/// A GET of `url` (with `header`, if any), answered.
async fn get(
    http: &reqwest::Client,
    url: String,
    header: Option<(&str, &str)>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = http.get(url);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    answer(req.send().await.unwrap()).await
}

/// What the fast path does not take still gets s3s's answer, and it never answers a wrong one.
async fn check_refusals(
    http: &reqwest::Client,
    s: &sigv4::Signer,
    host: &str,
    served: &Arc<std::sync::atomic::AtomicU64>,
) {
    let before = served.load(Ordering::SeqCst);
    // A tampered signature, a tampered key, a wrong secret, a missing key and bucket, another
    // account's bucket (not found for this key's account; nothing of it shown).
    let url = s.presign("GET", "fast", "small", &[]);
    let i = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &url[i..i + 1] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..i], &url[i + 1..]);
    let ak = url.split("X-Amz-Credential=").nth(1).unwrap();
    let ak = ak.split("%2F").next().unwrap();
    let wrong = sigv4::Signer::new(host, ak, "not the secret at all, not at all......");
    for (url, status, code_) in [
        (tampered, 403, "SignatureDoesNotMatch"),
        (
            url.replace("/small?", "/big?"),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            wrong.presign("GET", "fast", "small", &[]),
            403,
            "SignatureDoesNotMatch",
        ),
        (s.presign("GET", "fast", "nothing", &[]), 404, "NoSuchKey"),
        (
            s.presign("GET", "nobucket", "small", &[]),
            404,
            "NoSuchBucket",
        ),
        (
            s.presign("GET", "private-data", "secret", &[]),
            404,
            "NoSuchBucket",
        ),
    ] {
        let r = get(http, url.clone(), None).await;
        assert_eq!((r.0, code(&r.2).as_str()), (status, code_), "{url}");
        assert!(!String::from_utf8_lossy(&r.2).contains("not yours"));
    }
    // A range past the end, two ranges, a condition, a response override: s3s's answers.
    let small = || s.presign("GET", "fast", "small", &[]);
    for (range, status) in [("bytes=5-", 416), ("bytes=0-0,2-3", 400)] {
        let r = get(http, small(), Some(("range", range))).await;
        assert_eq!(r.0, status, "{range}: {r:?}");
    }
    let r = get(http, small(), Some(("if-none-match", "*"))).await;
    assert_eq!(r.0, 304);
    let over = s.presign(
        "GET",
        "fast",
        "small",
        &[("response-content-type", "text/x-y")],
    );
    let r = get(http, over, None).await;
    assert!(r.1.contains(&("content-type".into(), "text/x-y".into())));
    assert_eq!(
        served.load(Ordering::SeqCst),
        before,
        "none of these is the fast path's"
    );
}
