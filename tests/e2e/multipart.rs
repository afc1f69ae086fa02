//! Multipart uploads: create, parts, state, commit (atomic, idempotent), abort.

use reqwest::Method;
use serde_json::json;

use crate::{assert_err, bytes, md5_b64, T};

async fn create(t: &T, target: &str) -> (String, String) {
    let r = t
        .req(Method::POST, "/admin/uploads")
        .json(&json!({"objectPath": target, "headers": {"content-type": "text/plain", "m-kind": "mpu", "durability-level": "2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["partsDirectory"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn multipart_upload_commit_is_atomic_and_idempotent() {
    let t = T::start(3).await;
    let (id, dir) = create(&t, "/admin/stor/mpu").await;
    assert!(dir.starts_with("/admin/uploads/") && dir.ends_with(&id));
    let p0 = bytes(5 << 20, 1);
    let p1 = bytes(5 << 20, 2);
    let p2 = bytes(1234, 3);
    let mut etags = Vec::new();
    for (n, p) in [&p0, &p1, &p2].iter().enumerate() {
        let r = t.put(&format!("{dir}/{n}"), p.to_vec()).await;
        assert_eq!(r.status(), 204);
        etags.push(r.headers()["etag"].to_str().unwrap().to_string());
    }
    // Re-uploading a part replaces it.
    let r = t.put(&format!("{dir}/2"), p2.clone()).await;
    etags[2] = r.headers()["etag"].to_str().unwrap().to_string();
    let st: serde_json::Value = t.get(&format!("{dir}/state")).await.json().await.unwrap();
    assert_eq!(st["state"], "created");
    assert_eq!(st["targetObject"], "/admin/stor/mpu");
    assert_err(t.get("/admin/stor/mpu").await, 404, "ResourceNotFound").await;

    // Wrong etags and too-small parts are refused, changing nothing.
    let r = t
        .req(Method::POST, &format!("{dir}/commit"))
        .json(&json!({"parts": [etags[1], etags[0]]}))
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidArgument").await;
    let r = t
        .req(Method::POST, &format!("{dir}/commit"))
        .json(&json!({"parts": [etags[2], etags[2]]}))
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidArgument").await;

    let commit = || {
        t.req(Method::POST, &format!("{dir}/commit"))
            .json(&json!({"parts": etags}))
            .send()
    };
    assert_eq!(commit().await.unwrap().status(), 201);
    assert_eq!(commit().await.unwrap().status(), 201, "idempotent");
    let r = t.get("/admin/stor/mpu").await;
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["m-kind"], "mpu");
    let whole: Vec<u8> = [p0, p1, p2].concat();
    assert_eq!(r.headers()["content-md5"], md5_b64(&whole).as_str());
    assert!(r.bytes().await.unwrap() == whole);
    let st: serde_json::Value = t.get(&format!("{dir}/state")).await.json().await.unwrap();
    assert_eq!(st["state"], "done");
    assert_eq!(st["result"], "committed");
    // Parts are reclaimed; only the object's two copies remain.
    t.wait_data_files(2).await;
    assert_err(
        t.put(&format!("{dir}/3"), "late").await,
        400,
        "InvalidUpdate",
    )
    .await;
}

#[tokio::test]
async fn multipart_abort_and_bad_requests() {
    let t = T::start(3).await;
    let (_, dir) = create(&t, "/admin/stor/ab").await;
    t.put(&format!("{dir}/0"), "part").await;
    assert_eq!(
        t.req(Method::POST, &format!("{dir}/abort"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let st: serde_json::Value = t.get(&format!("{dir}/state")).await.json().await.unwrap();
    assert_eq!(st["result"], "aborted");
    t.wait_data_files(0).await;
    let r = t
        .req(Method::POST, &format!("{dir}/commit"))
        .json(&json!({"parts": []}))
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidUpdate").await;
    let r = t
        .req(Method::POST, "/admin/uploads")
        .json(&json!({"objectPath": "/admin/stor/missing/x"}))
        .send()
        .await
        .unwrap();
    assert_err(r, 404, "DirectoryDoesNotExist").await;
    let r = t
        .req(Method::POST, "/admin/uploads")
        .json(&json!({"objectPath": "/other/stor/x"}))
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidArgument").await;
    let r = t
        .req(Method::POST, "/admin/uploads")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_err(r, 400, "InvalidArgument").await;
    assert_err(
        t.get("/admin/uploads/abc/abcdef0123456789abcdef0123456789/state")
            .await,
        404,
        "ResourceNotFound",
    )
    .await;
    // An empty upload commits to an empty object.
    let (_, dir) = create(&t, "/admin/stor/empty").await;
    let r = t
        .req(Method::POST, &format!("{dir}/commit"))
        .json(&json!({"parts": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(t.get_bytes("/admin/stor/empty").await, b"");
}
