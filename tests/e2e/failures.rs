//! Failures: clients that lie, disconnect or stall; storage nodes that die before, during and
//! after a PUT, or in the middle of a GET.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{assert_err, bytes, T};

async fn raw(t: &T) -> TcpStream {
    let addr = t.c.url().trim_start_matches("http://").to_string();
    TcpStream::connect(addr).await.unwrap()
}

async fn read_status(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn put_without_length_is_refused() {
    let t = T::start(3).await;
    let mut s = raw(&t).await;
    s.write_all(b"PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = read_status(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 411"), "{resp}");
    assert!(resp.contains("ContentLengthRequired"), "{resp}");
}

#[tokio::test]
async fn client_disconnecting_mid_upload_leaves_nothing() {
    let t = T::start(3).await;
    let mut s = raw(&t).await;
    s.write_all(b"PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&vec![7u8; 3_000_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    t.wait_data_files(0).await;
    assert_err(t.get("/admin/stor/x").await, 404, "ResourceNotFound").await;
}

#[tokio::test]
async fn stalled_upload_times_out_and_leaves_nothing() {
    let t = T::start_with(3, |c| c.gateway.upload_timeout = Duration::from_millis(500)).await;
    let mut s = raw(&t).await;
    s.write_all(b"PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nabc")
        .await
        .unwrap();
    let resp = read_status(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("UploadTimeout"), "{resp}");
    t.wait_data_files(0).await;
    assert_err(t.get("/admin/stor/x").await, 404, "ResourceNotFound").await;
}

/// A PUT refused before its body was asked for (`Expect: 100-continue`, a failed precondition):
/// the client never sends that body, so the connection is closed after the refusal — the next
/// request on it must not be read as the old request's body.
#[tokio::test]
async fn a_refusal_before_100_continue_closes_the_connection() {
    let t = T::start(3).await;
    assert_eq!(t.put("/admin/stor/exists", "x").await.status(), 204);
    let mut s = raw(&t).await;
    s.write_all(
        b"PUT /admin/stor/exists HTTP/1.1\r\nhost: x\r\ncontent-length: 8\r\n\
          if-none-match: *\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = read_status(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 412"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    // The client, as it may, sends its next request instead of the body: the server has closed.
    let _ = s
        .write_all(b"GET /admin/stor/exists HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(t.get_bytes("/admin/stor/exists").await, b"x");
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let t = T::start(3).await;
    let mut s = raw(&t).await;
    s.write_all(b"PUT /admin/stor/e HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n").await.unwrap();
    let resp = read_status(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 100"), "{resp}");
    s.write_all(b"hello").await.unwrap();
    let resp = read_status(&mut s).await;
    assert!(resp.contains("204"), "{resp}");
    assert_eq!(t.get_bytes("/admin/stor/e").await, b"hello");
}

#[tokio::test]
async fn a_stopped_node_does_not_stop_reads_or_writes() {
    let mut t = T::start(3).await;
    let mut objects = Vec::new();
    for i in 0..12 {
        let body = bytes(50_000 + i, i as u64);
        assert_eq!(
            t.put(&format!("/admin/stor/o{i}"), body.clone())
                .await
                .status(),
            204
        );
        objects.push(body);
    }
    t.c.kill_node(1).await;
    for (i, body) in objects.iter().enumerate() {
        assert_eq!(
            &t.get_bytes(&format!("/admin/stor/o{i}")).await,
            body,
            "o{i}"
        );
    }
    for i in 0..12 {
        let r = t
            .put(&format!("/admin/stor/n{i}"), format!("new {i}"))
            .await;
        assert_eq!(r.status(), 204, "PUT {i} after a node died");
    }
    for i in 0..12 {
        assert_eq!(
            t.get_bytes(&format!("/admin/stor/n{i}")).await,
            format!("new {i}").as_bytes()
        );
    }
    // Three copies cannot be placed on two nodes.
    let r = t
        .req(Method::PUT, "/admin/stor/three")
        .header("durability-level", "3")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_err(r, 503, "ServiceUnavailable").await;
}

#[tokio::test]
async fn a_node_dying_during_a_put_fails_it_cleanly() {
    let mut t = T::start(3).await;
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let req = t
        .req(Method::PUT, "/admin/stor/big")
        .header("durability-level", "3")
        .body(reqwest::Body::wrap_stream(rx))
        .send();
    let feeder = tokio::spawn(async move {
        let mut tx = tx;
        use futures::SinkExt;
        for _ in 0..200 {
            if tx.send(Ok(vec![1u8; 256 << 10])).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let put = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.c.kill_node(2).await;
    let resp = put.await.unwrap();
    feeder.abort();
    match resp {
        Ok(r) => assert_err(r, 503, "ServiceUnavailable").await,
        Err(e) => panic!("gateway should answer, got {e}"),
    }
    assert_err(t.get("/admin/stor/big").await, 404, "ResourceNotFound").await;
    // The copies that did reach the surviving nodes are reclaimed.
    for _ in 0..200 {
        let left: usize = (0..2).map(|i| t.node_files(i)).sum();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: usize = (0..2).map(|i| t.node_files(i)).sum();
    assert_eq!(left, 0, "no half-stored object on the surviving nodes");
}

#[tokio::test]
async fn a_get_continues_on_another_copy_when_a_node_dies_mid_body() {
    let mut t = T::start(3).await;
    let body = bytes(24 << 20, 9);
    assert_eq!(t.put("/admin/stor/big", body.clone()).await.status(), 204);
    let entry = t.c.gw.meta.get("/admin/stor/big").await.unwrap().unwrap();
    let holders = entry.data.unwrap().nodes;
    assert_eq!(holders.len(), 2);
    // Make the victim the copy being served (the other one is tried last), then kill it.
    for (round, victim) in holders.iter().enumerate() {
        let other = &holders[1 - round];
        t.c.gw.nodes.mark_failed(other);
        let r = t.get("/admin/stor/big").await;
        assert_eq!(r.status(), 200);
        let mut s = r.bytes_stream();
        let mut got = Vec::new();
        while got.len() < (1 << 20) {
            got.extend_from_slice(&s.next().await.unwrap().unwrap());
        }
        let i = t.node_index(victim);
        t.c.kill_node(i).await;
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.expect("body continues on the other copy"));
        }
        assert!(got == body, "round {round}: body differs");
        assert!(
            t.c.gw.nodes.recently_failed(victim),
            "the stream failed over"
        );
        t.c.restart_node(i).await.unwrap();
        t.c.wait_for_nodes(3).await.unwrap();
    }
}

/// Send `head` and `body` raw, then either close or reset (`SO_LINGER` 0) the connection; return
/// whatever status line came back.
async fn broken_upload(t: &T, head: &str, body: &[u8], reset: bool) -> String {
    let mut s = raw(t).await;
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    if reset {
        #[allow(deprecated)] // a reset is the point: the socket is dropped at once
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
        return String::new();
    }
    s.shutdown().await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).to_string()
}

/// A client's broken upload is the client's failure: every node stays healthy and the next
/// PUTs of every client land at once.
#[tokio::test]
async fn a_clients_broken_upload_never_counts_against_a_node() {
    let t = T::start(3).await;
    let put = "PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\n";
    let chunked = format!("{put}transfer-encoding: chunked\r\n\r\n");
    let cases: Vec<(&str, String, Vec<u8>, bool)> = vec![
        (
            "short body, closed",
            format!("{put}content-length: 1000\r\n\r\n"),
            vec![1; 10],
            false,
        ),
        (
            "short body, reset",
            format!("{put}content-length: 100000\r\n\r\n"),
            vec![2; 5000],
            true,
        ),
        (
            "bad chunk size",
            chunked.clone(),
            b"5\r\nhello\r\nzz\r\nabc\r\n".to_vec(),
            false,
        ),
        (
            "missing CRLF",
            chunked.clone(),
            b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        (
            "no last chunk",
            chunked.clone(),
            b"5\r\nhello\r\n".to_vec(),
            false,
        ),
        (
            "huge extension",
            chunked.clone(),
            [&b"5;"[..], &vec![b'e'; 100_000], b"\r\nhello\r\n0\r\n\r\n"].concat(),
            false,
        ),
        (
            "garbage trailer",
            chunked.clone(),
            b"5\r\nhello\r\n0\r\n\x01\x02\r\n\r\n".to_vec(),
            false,
        ),
    ];
    for (what, head, body, reset) in cases {
        let resp = broken_upload(&t, &head, &body, reset).await;
        if !resp.is_empty() {
            assert!(resp.starts_with("HTTP/1.1 4"), "{what}: {resp}");
        }
        // Every node is still healthy in the gateway's eyes ...
        assert_eq!(t.c.gw.nodes.healthy_ids().len(), 3, "{what}");
        // ... and PUTs of other clients land at once.
        for i in 0..6 {
            let r = t
                .put(&format!("/admin/stor/ok{i}"), format!("after {what}"))
                .await;
            assert_eq!(r.status(), 204, "PUT {i} after {what}");
        }
    }
    assert_err(t.get("/admin/stor/x").await, 404, "ResourceNotFound").await;
}

/// With one of three nodes dead (and still fresh in the registry), PUTs at durability 2 land
/// at once: a copy whose node fails before taking the body is placed on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_before_the_body_and_puts_keep_landing() {
    let mut t = T::start(3).await;
    t.c.kill_node(2).await;
    let start = std::time::Instant::now();
    // Small objects (the whole body is held) and large ones (only the prefix is).
    for i in 0..20 {
        let body = if i % 4 == 0 {
            bytes(3_000_000, i as u64)
        } else {
            bytes(10_000 + i as usize, i as u64)
        };
        let r = t.put(&format!("/admin/stor/d{i}"), body.clone()).await;
        assert_eq!(r.status(), 204, "PUT {i} with a node dead");
        assert!(t.get_bytes(&format!("/admin/stor/d{i}")).await == body);
    }
    assert!(start.elapsed() < Duration::from_secs(30));
    // Each object has its 2 copies on the live nodes.
    for i in 0..20 {
        let e =
            t.c.gw
                .meta
                .get(&format!("/admin/stor/d{i}"))
                .await
                .unwrap()
                .unwrap();
        let d = e.data.unwrap();
        assert_eq!(d.nodes.len(), 2, "d{i}");
    }
}

/// Errors hyper answers before Mobula sees the request carry the JSON `{code, message}` body
/// like every other error.
#[tokio::test]
async fn requests_hyper_refuses_get_json_errors() {
    let t = T::start(2).await;
    let long_uri = format!(
        "GET /admin/stor/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /admin/stor HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("x-h{i}: {}\r\n", "v".repeat(4000)))
            .collect::<String>()
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("URI too long", long_uri, 414, "UriTooLong"),
        ("headers too large", many_headers, 431, "HeadersTooLarge"),
        ("bad header bytes", "GET /admin/stor HTTP/1.1\r\nhost: x\r\nx-a: \x01\x02\r\n\r\n".into(), 400, "InvalidArgument"),
        ("bad content-length", "PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".into(), 400, "InvalidArgument"),
        ("duplicate content-length", "PUT /admin/stor/x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd".into(), 400, "InvalidArgument"),
        ("unknown version", "GET /admin/stor HTTP/3.7\r\nhost: x\r\n\r\n".into(), 400, "InvalidArgument"),
        ("no request line", "\x00\x01\x02 nonsense\r\n\r\n".into(), 400, "InvalidArgument"),
    ];
    for (what, req, status, code) in cases {
        let mut s = raw(&t).await;
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: the connection is closed after the error"))
            .ok();
        let resp = String::from_utf8_lossy(&buf).to_string();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {resp}"
        );
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
        assert_eq!(v["code"], code, "{what}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // A good request on a fresh connection is untouched.
    assert_eq!(t.put("/admin/stor/fine", "ok").await.status(), 204);
}

/// Error bodies that reach the public never name an internal address (a node's or the
/// metadata service's URL).
#[tokio::test]
async fn public_errors_never_name_internal_addresses() {
    let mut t = T::start(2).await;
    assert_eq!(t.put("/admin/stor/o", "x").await.status(), 204);
    t.c.kill_node(0).await;
    t.c.kill_node(1).await;
    for r in [
        t.get("/admin/stor/o").await,
        t.put("/admin/stor/p", "y").await,
    ] {
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_server_error(), "{status} {body}");
        assert!(
            !body.contains("127.0.0.1") && !body.contains("http://"),
            "{body}"
        );
    }
}
