//! The connection limits of `serve`, over real TCP: a client that never finishes its request
//! head, a kept-alive connection left idle, and a client that stops reading a response are all
//! closed within their limits, while a slow handler is left alone.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use mobula_http::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMITS: Limits = Limits {
    api: None,
    header_read: Duration::from_millis(400),
    idle: Duration::from_millis(600),
};

async fn server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(mobula_http::serve_with(
        l,
        None,
        |req: mobula_http::Request| async move {
            match req.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    mobula_http::json(StatusCode::OK, &"done")
                }
                // 64 MiB: far more than the socket buffers hold.
                "/big" => {
                    let chunks = (0..1024)
                        .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 64 << 10])));
                    let mut r =
                        http::Response::new(mobula_http::stream(futures::stream::iter(chunks)));
                    *r.status_mut() = StatusCode::OK;
                    r
                }
                _ => mobula_http::json(StatusCode::OK, &"hi"),
            }
        },
        std::future::pending(),
        Duration::from_secs(1),
        LIMITS,
    ));
    addr
}

/// Read until the server closes; how long that took (panics after 10 s).
async fn closed_after(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection");
    t.elapsed()
}

#[tokio::test]
async fn half_sent_heads_are_cut_off() {
    let addr = server().await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        conns.push(s);
    }
    for s in conns.iter_mut() {
        assert!(closed_after(s).await < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let addr = server().await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_after(&mut s).await < Duration::from_secs(3));
}

#[tokio::test]
async fn a_slow_handler_is_not_idle_but_a_stalled_reader_is() {
    let addr = server().await;
    // The handler takes 1.5 s with no byte moving: longer than both limits, and still answered.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("done"));
    // A client that stops reading a large response is dropped once nothing moves.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .unwrap();
    assert!(got < 64 << 20, "the response was cut short ({got} bytes)");
}
