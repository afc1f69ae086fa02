//! Unit-test harness: a gateway whose storage nodes are `FakeNodes` (in memory, failures on
//! command) and whose metadata service is absent (discarded data then falls back to direct
//! deletes on the nodes, which the fake records).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use mobula_metadata::api::NodeInfo;
use mobula_storage_node::fake::FakeNodes;

use crate::auth::TrustPathAccount;
use crate::{Gateway, GatewayConfig};

/// A gateway over `n` fake nodes `n0…` at `http://node0…`.
pub fn gateway(n: usize) -> (Arc<Gateway>, Arc<FakeNodes>) {
    let fake = FakeNodes::new();
    let mut cfg = GatewayConfig::new("http://127.0.0.1:9");
    cfg.upload_timeout = Duration::from_secs(5);
    cfg.coordinate = false;
    let gw = Gateway::with_data(cfg, Box::new(TrustPathAccount), fake.clone());
    gw.nodes.set(
        (0..n)
            .map(|i| NodeInfo {
                id: format!("n{i}"),
                url: url(i),
                free_bytes: 1 << 40,
                total_bytes: 1 << 40,
                last_seen_ago_ms: 0,
                slots: 0,
                state: "active".into(),
            })
            .collect(),
    );
    (gw, fake)
}

pub fn url(i: usize) -> String {
    format!("http://node{i}")
}

/// (id, url) of nodes `ids`.
pub fn targets(ids: &[usize]) -> Vec<(String, String)> {
    ids.iter().map(|&i| (format!("n{i}"), url(i))).collect()
}

/// `len` bytes of a pattern.
pub fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

type Piece = Result<Frame<Bytes>, std::io::Error>;

/// A request body of `data` in `chunk`-byte pieces, ending in an error after `fail_after`
/// bytes when asked (a client that went away mid-upload).
pub fn body(
    data: &[u8],
    chunk: usize,
    fail_after: Option<usize>,
) -> StreamBody<futures::stream::Iter<std::vec::IntoIter<Piece>>> {
    let end = fail_after.unwrap_or(data.len()).min(data.len());
    let mut pieces: Vec<Piece> = data[..end]
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    if fail_after.is_some() {
        pieces.push(Err(std::io::Error::other("client went away")));
    }
    StreamBody::new(futures::stream::iter(pieces))
}

/// [`body`] with its length declared, as a request's `Content-Length` declares it.
pub fn sized_body(
    data: &[u8],
    chunk: usize,
    fail_after: Option<usize>,
) -> crate::together::Declared<StreamBody<futures::stream::Iter<std::vec::IntoIter<Piece>>>> {
    crate::together::Declared(body(data, chunk, fail_after), Some(data.len() as u64))
}

/// A gateway serving HTTP on a real metadata service (SQLite in `dir`, account `a`) over `n`
/// fake nodes registered there; returns its URL.
pub async fn served(n: usize, dir: &std::path::Path) -> (Arc<Gateway>, Arc<FakeNodes>, String) {
    let db = Arc::new(mobula_metadata::Db::open(&dir.join("meta.db")).unwrap());
    let ml = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let murl = format!("http://{}", ml.local_addr().unwrap());
    tokio::spawn(mobula_metadata::serve(ml, db, std::future::pending()));
    let meta = mobula_metadata::MetadataClient::new(&murl);
    meta.create_account("a").await.unwrap();
    for i in 0..n {
        meta.heartbeat(&mobula_metadata::api::Heartbeat {
            id: format!("n{i}"),
            url: url(i),
            free_bytes: 1 << 40,
            total_bytes: 1 << 40,
            slots: 0,
        })
        .await
        .unwrap();
    }
    let fake = FakeNodes::new();
    let mut cfg = GatewayConfig::new(&murl);
    cfg.coordinate = false;
    cfg.min_part_size = 1000;
    let gw = Gateway::with_data(cfg, Box::new(TrustPathAccount), fake.clone());
    let gl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gurl = format!("http://{}", gl.local_addr().unwrap());
    tokio::spawn(crate::run(gw.clone(), gl, std::future::pending()));
    (gw, fake, gurl)
}
