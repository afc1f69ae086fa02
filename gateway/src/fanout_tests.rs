//! The fan-out write against fake nodes: whose failure it was decides who is blamed, and a copy
//! is placed again only while the body's prefix is held.

use mobula_http::{ApiError, Code};
use mobula_storage_node::fake::Fault;

use super::write_data;
use crate::testing::{body, bytes, gateway, targets, url};

#[tokio::test]
async fn a_dead_node_is_replaced_before_the_body() {
    let (gw, fake) = gateway(3);
    fake.fail(&url(0), Fault::Down);
    let data = bytes(10_000);
    let d = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&data, 4096, None),
        None,
        true,
    )
    .await
    .unwrap();
    let mut nodes = d.nodes.clone();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    assert_eq!(fake.get(&url(1), &d.id).unwrap(), data);
    assert_eq!(fake.get(&url(2), &d.id).unwrap(), data);
    assert!(gw.nodes.recently_failed("n0"));
    assert!(!gw.nodes.recently_failed("n1"));
}

#[tokio::test]
async fn a_small_object_survives_a_node_failing_mid_body() {
    let (gw, fake) = gateway(3);
    fake.fail(&url(1), Fault::PutFailsAfter(100));
    let data = bytes(20_000);
    let d = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&data, 1000, None),
        None,
        true,
    )
    .await
    .unwrap();
    assert!(d.nodes.contains(&"n2".to_string()) && !d.nodes.contains(&"n1".to_string()));
    assert_eq!(fake.get(&url(2), &d.id).unwrap(), data);
    assert!(gw.nodes.recently_failed("n1"));
}

#[tokio::test]
async fn a_node_failing_mid_body_of_a_large_object_fails_that_put_alone() {
    let (gw, fake) = gateway(3);
    fake.fail(&url(1), Fault::PutFailsAfter(3 << 20));
    let data = bytes(8 << 20);
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&data, 64 << 10, None),
        None,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::ServiceUnavailable, "{e}");
    assert!(gw.nodes.recently_failed("n1"));
    assert!(!gw.nodes.recently_failed("n0"));
    // Nothing is left: the healthy node's copy was aborted (or deleted), none went elsewhere.
    for i in 0..3 {
        assert_eq!(fake.files_on(&url(i)), 0, "node {i}");
    }
    assert!(fake.puts().iter().all(|(u, _)| *u != url(2)));
}

#[tokio::test]
async fn a_clients_broken_body_blames_no_node_and_leaves_nothing() {
    let (gw, fake) = gateway(3);
    let data = bytes(300_000);
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&data, 8192, Some(100_000)),
        None,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{e}");
    for n in ["n0", "n1", "n2"] {
        assert!(!gw.nodes.recently_failed(n), "{n}");
    }
    for i in 0..3 {
        assert_eq!(fake.files_on(&url(i)), 0, "node {i}");
    }
}

#[tokio::test]
async fn a_wrong_content_md5_is_the_clients_and_stores_nothing() {
    let (gw, fake) = gateway(2);
    let data = bytes(5000);
    let md5 = Some("AAAAAAAAAAAAAAAAAAAAAA==".to_string());
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&data, 1000, None),
        md5,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::ContentMD5Mismatch, "{e}");
    assert!(!gw.nodes.recently_failed("n0") && !gw.nodes.recently_failed("n1"));
    assert_eq!(fake.files_on(&url(0)) + fake.files_on(&url(1)), 0);
}

#[tokio::test]
async fn a_node_refusing_the_request_is_not_blamed() {
    let (gw, fake) = gateway(3);
    let refusal = ApiError::new(Code::InvalidArgument, "no");
    fake.fail(&url(1), Fault::Answer(refusal));
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&bytes(100), 10, None),
        None,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(!gw.nodes.recently_failed("n1"));
    // A node's own 5xx is its failure: avoided, and the copy placed elsewhere.
    let (gw, fake) = gateway(3);
    fake.fail(
        &url(1),
        Fault::Answer(ApiError::new(Code::ServiceUnavailable, "busy")),
    );
    let d = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&bytes(100), 10, None),
        None,
        true,
    )
    .await
    .unwrap();
    assert!(gw.nodes.recently_failed("n1"));
    assert!(d.nodes.contains(&"n2".to_string()));
}

#[tokio::test]
async fn pinned_copies_are_never_placed_elsewhere() {
    // Multipart parts must stay on their upload's nodes.
    let (gw, fake) = gateway(3);
    fake.fail(&url(0), Fault::Down);
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&bytes(1000), 100, None),
        None,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::ServiceUnavailable);
    assert_eq!(fake.files_on(&url(2)), 0);
    assert_eq!(fake.files_on(&url(1)), 0);
}

#[tokio::test]
async fn no_node_left_to_take_the_copy_fails_the_put() {
    let (gw, fake) = gateway(2);
    fake.fail(&url(0), Fault::Down);
    let e = write_data(
        &gw,
        &targets(&[0, 1]),
        2,
        body(&bytes(1000), 100, None),
        None,
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, Code::ServiceUnavailable);
    assert!(
        !e.message.contains("http://"),
        "no node URL in a public error: {e}"
    );
    assert_eq!(fake.files_on(&url(1)), 0, "the surviving copy is discarded");
}

/// Small bodies to nodes that can be written together ([`crate::together`]): one call for every
/// copy, and the streaming path's rules when a copy fails there.
mod together {
    use base64::Engine;
    use md5::Digest;

    use super::*;
    use crate::testing::sized_body;

    /// Two copies (to n0 and n1) of `body`, which may be placed again.
    async fn two_copies<B>(
        gw: &crate::Gateway,
        body: B,
        md5: Option<String>,
    ) -> Result<mobula_metadata::api::Data, ApiError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        write_data(gw, &targets(&[0, 1]), 2, body, md5, true).await
    }

    #[tokio::test]
    async fn a_small_body_goes_to_every_copy_on_one_call() {
        let (gw, fake) = gateway(3);
        fake.write_together(true);
        let data = bytes(10_000);
        let d = two_copies(&gw, sized_body(&data, 4096, None), None)
            .await
            .unwrap();
        assert_eq!(fake.together_calls(), 1);
        assert!(fake.puts().is_empty(), "nothing streamed");
        assert_eq!(d.nodes, ["n0", "n1"]);
        assert_eq!(d.size, 10_000);
        assert_eq!(d.blake3, blake3::hash(&data).to_hex().to_string());
        assert_eq!(fake.get(&url(0), &d.id).unwrap(), data);
        assert_eq!(fake.get(&url(1), &d.id).unwrap(), data);
        // Larger than together::LIMIT, or of no declared length: streamed as before.
        let large = bytes(crate::together::LIMIT as usize + 1);
        let big = sized_body(&large, 8192, None);
        let d = two_copies(&gw, big, None).await.unwrap();
        let undeclared = body(&data, 4096, None);
        two_copies(&gw, undeclared, None).await.unwrap();
        assert_eq!(fake.together_calls(), 1);
        assert_eq!(fake.puts().len(), 4);
        assert_eq!(fake.get(&url(1), &d.id).unwrap(), large);
    }

    #[tokio::test]
    async fn a_copy_failing_on_the_one_call_is_placed_again_and_nothing_is_left_over() {
        let (gw, fake) = gateway(3);
        fake.write_together(true);
        fake.fail(&url(1), Fault::Down);
        let data = bytes(20_000);
        let d = two_copies(&gw, sized_body(&data, 1000, None), None)
            .await
            .unwrap();
        assert_eq!(fake.together_calls(), 1);
        assert!(gw.nodes.recently_failed("n1"));
        let mut nodes = d.nodes.clone();
        nodes.sort();
        assert_eq!(
            nodes,
            ["n0", "n2"],
            "streamed, the dead node's copy placed again"
        );
        assert_eq!(fake.get(&url(0), &d.id).unwrap(), data);
        assert_eq!(fake.get(&url(2), &d.id).unwrap(), data);
        // The first attempt's copy on n0 was discarded (no metadata service here: deleted).
        assert_eq!(fake.files_on(&url(0)), 1);
        assert!(fake
            .deletes()
            .iter()
            .any(|(u, id)| *u == url(0) && *id != d.id));
    }

    #[tokio::test]
    async fn a_nodes_refusal_on_the_one_call_is_its_answer_and_blames_no_node() {
        let (gw, fake) = gateway(3);
        fake.write_together(true);
        fake.fail(
            &url(1),
            Fault::Answer(ApiError::new(Code::InvalidArgument, "no")),
        );
        let e = two_copies(&gw, sized_body(&bytes(100), 10, None), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(!gw.nodes.recently_failed("n1"));
        for i in 0..3 {
            assert_eq!(fake.files_on(&url(i)), 0, "node {i}");
        }
    }

    #[tokio::test]
    async fn the_clients_failures_store_nothing_and_blame_no_node() {
        let (gw, fake) = gateway(3);
        fake.write_together(true);
        let data = bytes(5000);
        let md5 = Some("AAAAAAAAAAAAAAAAAAAAAA==".to_string());
        let wrong = sized_body(&data, 1000, None);
        let e = two_copies(&gw, wrong, md5).await.unwrap_err();
        assert_eq!(e.code, Code::ContentMD5Mismatch, "{e}");
        let broken = sized_body(&data, 1000, Some(2500));
        let e = two_copies(&gw, broken, None).await.unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        assert_eq!(fake.together_calls(), 0, "no copy was begun");
        assert!(fake.puts().is_empty());
        for n in ["n0", "n1", "n2"] {
            assert!(!gw.nodes.recently_failed(n), "{n}");
        }
        // The right Content-MD5 is accepted.
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
        let right = sized_body(&data, 1000, None);
        let d = two_copies(&gw, right, Some(md5.clone())).await.unwrap();
        assert_eq!(d.md5, md5);
    }
}
