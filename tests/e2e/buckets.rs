//! Buckets through the Manta API (SPEC §8): create/list/head/delete buckets, objects with keys
//! that hold slashes, listing with prefix, delimiter and markers, and the errors.

use reqwest::{Method, StatusCode};

use crate::T;

async fn code(r: reqwest::Response) -> (StatusCode, String) {
    let s = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (s, v["code"].as_str().unwrap_or_default().to_string())
}

fn names(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let kind = v["type"].as_str().unwrap();
            format!("{}:{}", &kind[..1], v["name"].as_str().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn buckets_through_the_manta_api() {
    let t = T::start(3).await;
    let r = t
        .req(Method::PUT, "/admin/buckets/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = t
        .req(Method::PUT, "/admin/buckets/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(r).await,
        (StatusCode::CONFLICT, "BucketAlreadyExists".into())
    );
    for bad in ["Logs", "ab", "a_b", "1.2.3.4"] {
        let r = t
            .req(Method::PUT, &format!("/admin/buckets/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            code(r).await,
            (StatusCode::BAD_REQUEST, "InvalidBucketName".into()),
            "{bad}"
        );
    }
    let r = t
        .req(Method::HEAD, "/admin/buckets/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = t
        .req(Method::HEAD, "/admin/buckets/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Objects: keys are opaque, `/`, `//`, `..` included; no directory is made for them.
    let keys = ["a/b/c.txt", "a/b/d.txt", "a//x", "a/../y", "top", "z/"];
    for k in keys {
        let enc: String = k.replace('/', "%2F");
        let path = format!(
            "/admin/buckets/logs/objects/{}",
            if k == "a/../y" { &enc } else { k }
        );
        let r = t.put(&path, format!("body of {k}")).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{k}");
    }
    assert_eq!(
        t.get_bytes("/admin/buckets/logs/objects/a/b/c.txt").await,
        b"body of a/b/c.txt"
    );
    assert_eq!(
        t.get_bytes("/admin/buckets/logs/objects/a%2F..%2Fy").await,
        b"body of a/../y"
    );
    let r = t
        .req(Method::GET, "/admin/buckets/logs/objects/a/b/c.txt")
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], b"body");
    let (s, c) = code(t.get("/admin/buckets/logs/objects/a/b").await).await;
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "ObjectNotFound"));
    // Conditional write: If-None-Match: * fails on an existing key.
    let r = t
        .req(Method::PUT, "/admin/buckets/logs/objects/top")
        .header("if-none-match", "*")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    // Writing into a bucket that does not exist.
    let (s, c) = code(t.put("/admin/buckets/nope/objects/k", "x").await).await;
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "BucketNotFound"));

    // Listing.
    let list = |q: &str| {
        let url = format!("/admin/buckets/logs?{q}");
        let t = &t;
        async move {
            let r = t.get(&url).await;
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            let next = r.headers().get("next-marker").map(|v| {
                percent_encoding::percent_decode_str(v.to_str().unwrap())
                    .decode_utf8_lossy()
                    .to_string()
            });
            (names(&r.text().await.unwrap()), next)
        }
    };
    let (all, next) = list("").await;
    assert_eq!(
        all,
        [
            "b:a/../y",
            "b:a//x",
            "b:a/b/c.txt",
            "b:a/b/d.txt",
            "b:top",
            "b:z/"
        ]
    );
    assert_eq!(next, None);
    let (grouped, _) = list("delimiter=/").await;
    assert_eq!(grouped, ["g:a/", "b:top", "g:z/"]);
    let (under, _) = list("prefix=a/&delimiter=/").await;
    assert_eq!(under, ["g:a/../", "g:a//", "g:a/b/"]);
    let (p1, next) = list("delimiter=/&limit=1").await;
    assert_eq!(
        (p1.as_slice(), next.as_deref()),
        (&["g:a/".to_string()][..], Some("a/"))
    );
    let (p2, next) = list("delimiter=/&limit=1&marker=a%2F").await;
    assert_eq!(
        (p2.as_slice(), next.as_deref()),
        (&["b:top".to_string()][..], Some("top"))
    );
    let r = t.get("/admin/buckets/logs/objects").await;
    assert_eq!(names(&r.text().await.unwrap()).len(), 6);
    // The bucket list.
    let r = t.get("/admin/buckets").await;
    assert_eq!(names(&r.text().await.unwrap()), ["b:logs"]);

    // Not empty; then empty and gone.
    let (s, c) = code(
        t.req(Method::DELETE, "/admin/buckets/logs")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, c.as_str()), (StatusCode::CONFLICT, "BucketNotEmpty"));
    for k in keys {
        let r = t
            .req(
                Method::DELETE,
                &format!("/admin/buckets/logs/objects/{}", k.replace('/', "%2F")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{k}");
    }
    let r = t
        .req(Method::DELETE, "/admin/buckets/logs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (s, c) = code(t.get("/admin/buckets/logs").await).await;
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "BucketNotFound"));
    t.wait_data_files(0).await;
}
