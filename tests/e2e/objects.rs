//! The storage API of SPEC §3: directories, objects, headers, conditionals, ranges, snaplinks,
//! and bad input (each with its status and code, and nothing left behind).

use reqwest::{Method, StatusCode};

use crate::{assert_err, bytes, md5_b64, T};

#[tokio::test]
async fn directories_objects_and_headers() {
    let t = T::start(3).await;
    assert_eq!(t.get("/ping").await.status(), StatusCode::OK);
    assert_eq!(
        t.mkdir("/admin/stor/d").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.mkdir("/admin/stor/d").await.status(),
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    assert_err(
        t.mkdir("/admin/stor/x/y").await,
        404,
        "DirectoryDoesNotExist",
    )
    .await;

    let body = bytes(100_000, 1);
    let r = t
        .req(Method::PUT, "/admin/stor/d/o")
        .header("content-type", "text/plain")
        .header("m-color", "blue")
        .header("cache-control", "no-cache")
        .header("access-control-allow-origin", "*")
        .header("durability-level", "3")
        .header("content-md5", md5_b64(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["computed-md5"], md5_b64(&body).as_str());
    assert!(r.headers().contains_key("last-modified"));
    assert!(r.headers().contains_key("x-request-id"));

    let r = t.get("/admin/stor/d/o").await;
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["etag"], etag.as_str());
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["m-color"], "blue");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["durability-level"], "3");
    assert_eq!(h["content-md5"], md5_b64(&body).as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], "100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    assert_eq!(t.data_files(), 3, "three copies");

    let r = t.req(Method::HEAD, "/admin/stor/d/o").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");

    // Directory listing and HEAD.
    let r = t.get("/admin/stor/d").await;
    assert_eq!(
        r.headers()["content-type"],
        "application/x-json-stream; type=directory"
    );
    assert_eq!(r.headers()["result-set-size"], "1");
    let line: serde_json::Value = serde_json::from_str(r.text().await.unwrap().trim()).unwrap();
    assert_eq!(line["name"], "o");
    assert_eq!(line["type"], "object");
    assert_eq!(line["size"], 100000);
    assert_eq!(line["etag"], etag.as_str());
    assert_eq!(line["contentType"], "text/plain");
    assert_eq!(line["contentMD5"], md5_b64(&body).as_str());
    assert_eq!(line["durability"], 3);
    assert!(line["mtime"].as_str().unwrap().ends_with('Z'));
    let r = t.req(Method::HEAD, "/admin/stor/d").send().await.unwrap();
    assert_eq!(r.headers()["result-set-size"], "1");

    // The account root lists the areas and refuses writes.
    let root = t.get("/admin").await.text().await.unwrap();
    for area in ["jobs", "public", "stor", "uploads"] {
        assert!(root.contains(&format!("\"{area}\"")), "{root}");
    }
    assert_err(
        t.req(Method::PUT, "/admin").body("x").send().await.unwrap(),
        400,
        "OperationNotAllowedOnRootDirectory",
    )
    .await;
    assert_err(
        t.req(Method::DELETE, "/admin/stor").send().await.unwrap(),
        400,
        "OperationNotAllowedOnDirectory",
    )
    .await;

    // Metadata update keeps the data.
    let r = t
        .req(Method::PUT, "/admin/stor/d/o?metadata=true")
        .header("content-type", "application/json")
        .header("m-color", "red")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = t.get("/admin/stor/d/o").await;
    assert_eq!(r.headers()["m-color"], "red");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(
        !r.headers().contains_key("cache-control"),
        "metadata is replaced as a whole"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);

    // Deletes: non-empty directory refused; object then directory; data reclaimed.
    assert_err(
        t.req(Method::DELETE, "/admin/stor/d").send().await.unwrap(),
        400,
        "DirectoryNotEmpty",
    )
    .await;
    assert_eq!(
        t.req(Method::DELETE, "/admin/stor/d/o")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_err(t.get("/admin/stor/d/o").await, 404, "ResourceNotFound").await;
    assert_eq!(
        t.req(Method::DELETE, "/admin/stor/d")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    t.wait_data_files(0).await;

    // Public area is readable; the root of an unknown account is refused.
    assert_eq!(t.put("/admin/public/p", "pub").await.status(), 204);
    assert_eq!(t.get_bytes("/admin/public/p").await, b"pub");
    assert_err(t.get("/nobody/stor").await, 403, "AccountDoesNotExist").await;
    assert_err(
        t.put("/admin/nowhere/x", "x").await,
        404,
        "ResourceNotFound",
    )
    .await;
}

#[tokio::test]
async fn overwrite_is_atomic_and_reclaims_old_data() {
    let t = T::start(3).await;
    assert_eq!(t.put("/admin/stor/o", "one").await.status(), 204);
    assert_eq!(t.put("/admin/stor/o", "two!").await.status(), 204);
    assert_eq!(t.get_bytes("/admin/stor/o").await, b"two!");
    t.wait_data_files(2).await;
    assert_err(
        t.req(Method::PUT, "/admin/stor")
            .body("x")
            .send()
            .await
            .unwrap(),
        400,
        "OperationNotAllowedOnDirectory",
    )
    .await;
    assert_eq!(t.mkdir("/admin/stor/dir").await.status(), 204);
    assert_err(
        t.put("/admin/stor/dir", "x").await,
        400,
        "OperationNotAllowedOnDirectory",
    )
    .await;
    assert_err(t.mkdir("/admin/stor/o").await, 400, "InvalidUpdate").await;
    assert_err(
        t.mkdir("/admin/stor/o/sub").await,
        400,
        "ParentNotDirectory",
    )
    .await;
    assert_err(
        t.put("/admin/stor/o/sub", "x").await,
        400,
        "ParentNotDirectory",
    )
    .await;
    assert_eq!(t.get_bytes("/admin/stor/o").await, b"two!");
    t.wait_data_files(2).await;
}

#[tokio::test]
async fn conditional_requests() {
    let t = T::start(3).await;
    let r = t.put("/admin/stor/c", "v1").await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let lm = r.headers()["last-modified"].to_str().unwrap().to_string();
    let put = |h: &'static str, v: String| {
        t.req(Method::PUT, "/admin/stor/c")
            .header(h, v)
            .body("v2")
            .send()
    };
    assert_err(
        put("if-none-match", "*".into()).await.unwrap(),
        412,
        "PreconditionFailed",
    )
    .await;
    assert_err(
        put("if-match", "other".into()).await.unwrap(),
        412,
        "PreconditionFailed",
    )
    .await;
    assert_err(
        put(
            "if-unmodified-since",
            "Thu, 01 Jan 1998 00:00:00 GMT".into(),
        )
        .await
        .unwrap(),
        412,
        "PreconditionFailed",
    )
    .await;
    assert_eq!(t.get_bytes("/admin/stor/c").await, b"v1");
    assert_eq!(
        put("if-match", format!("\"{etag}\""))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(t.get_bytes("/admin/stor/c").await, b"v2");
    // create-only
    let r = t
        .req(Method::PUT, "/admin/stor/new")
        .header("if-none-match", "*")
        .body("n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Reads: 304 on a matching If-None-Match or a fresh If-Modified-Since.
    let r = t.get("/admin/stor/c").await;
    let etag2 = r.headers()["etag"].to_str().unwrap().to_string();
    let r = t
        .req(Method::GET, "/admin/stor/c")
        .header("if-none-match", etag2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = t
        .req(Method::GET, "/admin/stor/c")
        .header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = t
        .req(Method::GET, "/admin/stor/c")
        .header("if-modified-since", lm.replace("20", "19"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.wait_data_files(4).await;
}

#[tokio::test]
async fn ranges() {
    let t = T::start(3).await;
    let body = bytes(10_000, 2);
    t.put("/admin/stor/r", body.clone()).await;
    for (h, a, b) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-10", 9990, 9999),
        ("bytes=9000-20000", 9000, 9999),
    ] {
        let r = t
            .req(Method::GET, "/admin/stor/r")
            .header("range", h)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{h}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{b}/10000").as_str()
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[a..=b], "{h}");
    }
    for bad in [
        "bytes=10000-",
        "bytes=20-10",
        "bytes=abc",
        "lines=1-2",
        "bytes=-0",
        // Malformed lists of ranges are malformed ranges, not unimplemented ones.
        "bytes=0-5,",
        "bytes=,0-5",
        "bytes=0-1,x-2",
        "bytes=0-1,,5-6",
    ] {
        let r = t
            .req(Method::GET, "/admin/stor/r")
            .header("range", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-range"], "bytes */10000");
        assert_err(r, 416, "RequestedRangeNotSatisfiable").await;
    }
    let r = t
        .req(Method::GET, "/admin/stor/r")
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_err(r, 501, "NotImplemented").await;
    // Empty objects.
    let r = t
        .req(Method::PUT, "/admin/stor/empty")
        .header("content-length", "0")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(t.get_bytes("/admin/stor/empty").await, b"");
}

#[tokio::test]
async fn snaplinks_share_data_and_outlive_their_source() {
    let t = T::start(3).await;
    t.put("/admin/stor/src", "original").await;
    let link = |dst: &'static str, loc: Option<&'static str>| {
        let mut r = t
            .req(Method::PUT, dst)
            .header("content-type", "application/json; type=link");
        if let Some(l) = loc {
            r = r.header("location", l);
        }
        r.send()
    };
    assert_eq!(
        link("/admin/stor/ln", Some("/admin/stor/src"))
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(t.data_files(), 2, "no bytes copied");
    assert_eq!(t.get_bytes("/admin/stor/ln").await, b"original");
    t.put("/admin/stor/src", "changed").await;
    assert_eq!(t.get_bytes("/admin/stor/ln").await, b"original");
    t.req(Method::DELETE, "/admin/stor/src")
        .send()
        .await
        .unwrap();
    assert_eq!(t.get_bytes("/admin/stor/ln").await, b"original");
    t.wait_data_files(2).await;
    assert_err(
        link("/admin/stor/l2", None).await.unwrap(),
        400,
        "LocationRequired",
    )
    .await;
    assert_err(
        link("/admin/stor/l2", Some("/admin/stor/none"))
            .await
            .unwrap(),
        404,
        "SourceObjectNotFound",
    )
    .await;
    t.mkdir("/admin/stor/dir").await;
    assert_err(
        link("/admin/stor/l2", Some("/admin/stor/dir"))
            .await
            .unwrap(),
        400,
        "LinkNotObject",
    )
    .await;
    assert_err(
        link("/admin/stor/l2", Some("/admin/stor/../x"))
            .await
            .unwrap(),
        400,
        "InvalidLink",
    )
    .await;
    t.req(Method::DELETE, "/admin/stor/ln")
        .send()
        .await
        .unwrap();
    t.wait_data_files(0).await;
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing() {
    let t = T::start(3).await;
    t.mkdir("/admin/stor/d").await;
    // Sent raw: HTTP client libraries normalise dot segments before sending.
    for p in [
        "/admin/stor/%2e%2e/%2e%2e/etc/passwd",
        "/admin/stor/../../etc/passwd",
        "/admin/stor/d/%2E%2E",
        "/admin/stor/d/./x",
        "/admin/stor/a%2Fb",
        "/admin/stor/a%00b",
        "/admin/stor/a%5Cb",
        "/admin/stor/a\\b",
        "/admin/stor/%ff%fe",
        "/admin/stor//x",
    ] {
        for m in ["PUT", "GET", "DELETE"] {
            let (status, body) = raw(&t, m, p).await;
            assert_eq!(status, 400, "{m} {p}: {body}");
            assert!(
                body.contains("\"code\":\"InvalidResource\""),
                "{m} {p}: {body}"
            );
        }
    }
    let long_name = format!("/admin/stor/{}", "n".repeat(256));
    assert_err(t.put(&long_name, "x").await, 400, "InvalidResource").await;
    let long_path = format!("/admin/stor{}", "/dddddddddd".repeat(100));
    assert_err(t.put(&long_path, "x").await, 400, "InvalidResource").await;
    for d in ["0", "7", "abc"] {
        let r = t
            .req(Method::PUT, "/admin/stor/d/x")
            .header("durability-level", d)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_err(r, 400, "InvalidDurabilityLevel").await;
    }
    let r = t
        .req(Method::PUT, "/admin/stor/d/x")
        .header("content-md5", md5_b64(b"other"))
        .body("x".repeat(300_000))
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "ContentMD5Mismatch").await;
    let r = t
        .req(Method::PUT, "/admin/stor/d/x")
        .header("m-big", "v".repeat(5000))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidArgument").await;
    assert_err(
        t.req(Method::GET, "/admin/stor/d?limit=0")
            .send()
            .await
            .unwrap(),
        400,
        "InvalidArgument",
    )
    .await;
    assert_err(
        t.req(Method::GET, "/admin/stor/d?limit=1025")
            .send()
            .await
            .unwrap(),
        400,
        "InvalidArgument",
    )
    .await;
    assert_err(
        t.req(Method::PATCH, "/admin/stor/d").send().await.unwrap(),
        405,
        "MethodNotAllowed",
    )
    .await;
    assert_err(
        t.put("/ghost/stor/x", "x").await,
        403,
        "AccountDoesNotExist",
    )
    .await;
    assert_err(
        t.req(Method::DELETE, "/admin/stor/none")
            .send()
            .await
            .unwrap(),
        404,
        "ResourceNotFound",
    )
    .await;
    // Nothing visible, nothing stored.
    assert_eq!(
        t.get("/admin/stor/d").await.headers()["result-set-size"],
        "0"
    );
    t.wait_data_files(0).await;
}

/// Send one request over a raw socket; returns the status and the body.
async fn raw(t: &T, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.c.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    (status, text)
}
