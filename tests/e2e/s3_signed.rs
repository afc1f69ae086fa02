//! S3 requests signed here (presigned SigV4 URLs, the S3 benchmark's signer) for what no
//! third-party client shows: a write into a bucket that another API deleted moments after the
//! S3 listener last saw it is refused with `NoSuchBucket`, and nothing of it stays behind.

use reqwest::Method;

use crate::s3::start;

#[allow(dead_code)]
#[path = "../../benches/s3/sigv4.rs"]
pub mod sigv4;

/// A signer with the key `start` made, and the listener's `host:port`.
pub fn signer(env: &[(String, String)]) -> (sigv4::Signer, String) {
    let var = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let endpoint = var("AWS_ENDPOINT_URL");
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let s = sigv4::Signer::new(
        host,
        &var("AWS_ACCESS_KEY_ID"),
        &var("AWS_SECRET_ACCESS_KEY"),
    );
    (s, host.to_string())
}

fn code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_into_a_bucket_deleted_meanwhile_is_no_such_bucket_and_stores_nothing() {
    let (t, env) = start(None).await;
    let before = t.data_files(); // the other account's object
    let (s, _) = signer(&env);
    let http = reqwest::Client::new();
    let r = http
        .put(s.presign("PUT", "soon-gone", "", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // A write makes the listener see the bucket (and keep it in mind for a few seconds).
    let r = http
        .put(s.presign("PUT", "soon-gone", "first", &[]))
        .body("one")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(s.presign("DELETE", "soon-gone", "first", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    t.wait_data_files(before).await;
    // The bucket goes away through the Manta API, which the S3 listener does not hear of.
    let r = t
        .req(Method::DELETE, "/admin/buckets/soon-gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for key in ["second", "third"] {
        let r = http
            .put(s.presign("PUT", "soon-gone", key, &[]))
            .body(vec![9u8; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(code(&r.text().await.unwrap()), "NoSuchBucket");
    }
    let r = http
        .get(s.presign("GET", "soon-gone", "second", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(code(&r.text().await.unwrap()), "NoSuchBucket");
    assert!(t
        .c
        .gw
        .meta
        .get("/admin/buckets/soon-gone")
        .await
        .unwrap()
        .is_none());
    t.wait_data_files(before).await;
}
