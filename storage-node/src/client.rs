//! Client of the storage-node API, used by the gateway (and by peers for repair).
//!
//! Every call returns a [`NodeError`] that says whose failure it was: the node's (unreachable,
//! or its own 5xx: worth avoiding the node for a while and trying another), or not (the node
//! refused a bad request, or the caller's own upload stream was aborted — see
//! [`UploadAborted`]). Error messages never carry the node's URL: they may reach the public.

use bytes::Bytes;
use futures::Stream;
use mobula_http::{ApiError, Code};

use crate::api::{Concat, Fetch, NewSnapshot, Status, Written};

/// A client for any storage node (the node is named by URL per call; cheap to clone).
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
}

impl Default for NodeClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Put into an upload stream (as `io::Error::other(UploadAborted)`) by a caller whose own
/// client failed: the node's request then ends as [`NodeError::Aborted`], never the node's fault.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the upload was aborted by its sender")]
pub struct UploadAborted;

/// Why a request to a storage node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No exchange with the node: connection refused or reset, timed out, a broken response.
    #[error("storage node unreachable: {0}")]
    Unreachable(String),
    /// The node answered with an error of its own.
    #[error("{0}")]
    Answered(ApiError),
    /// The body the caller streamed was aborted by the caller ([`UploadAborted`]).
    #[error("the upload was aborted by its sender")]
    Aborted,
}

impl NodeError {
    /// Whether the node itself failed (so it is worth avoiding for a while), rather than the
    /// request or the caller.
    pub fn is_node_fault(&self) -> bool {
        match self {
            NodeError::Unreachable(_) => true,
            NodeError::Answered(e) => e.status().is_server_error(),
            NodeError::Aborted => false,
        }
    }

    /// The wire error of an answer, if the node answered.
    pub fn answered(&self) -> Option<&ApiError> {
        match self {
            NodeError::Answered(e) => Some(e),
            _ => None,
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::Answered(e) => e,
            e @ NodeError::Unreachable(_) => ApiError::new(Code::ServiceUnavailable, e.to_string()),
            e @ NodeError::Aborted => ApiError::new(Code::InvalidArgument, e.to_string()),
        }
    }
}

pub(crate) fn unreachable(e: reqwest::Error) -> NodeError {
    // Our own abort, carried through reqwest and hyper as the body's error.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if s.downcast_ref::<UploadAborted>().is_some()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<UploadAborted>())
        {
            return NodeError::Aborted;
        }
        src = s.source();
    }
    // The whole chain ("error sending request: … Connection refused"), without the URL.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    NodeError::Unreachable(msg)
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, NodeError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.bytes().await.map_err(unreachable)?;
    Err(NodeError::Answered(ApiError::from_wire(status, &body)))
}

/// How long a read of a copy waits for the node's answer to begin before trying another copy.
pub const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

impl NodeClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(mobula_http::POOL_IDLE_PER_HOST)
            .pool_idle_timeout(mobula_http::POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client always builds");
        NodeClient { http }
    }

    /// Stream `body` into data `id` on the node at `url`; returns once it is durable there.
    pub async fn put<S>(
        &self,
        url: &str,
        id: &str,
        body: S,
        expected_md5: Option<&str>,
    ) -> Result<Written, NodeError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let mut req = self
            .http
            .put(format!("{url}/data/{id}"))
            .body(reqwest::Body::wrap_stream(body));
        if let Some(m) = expected_md5 {
            req = req.header("x-expected-md5", m);
        }
        if let Some(id) = mobula_http::reqid::current() {
            req = req.header(mobula_http::reqid::HEADER, &*id);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// Open data `id` (optionally the inclusive byte range `range`) for streaming.
    pub async fn get(
        &self,
        url: &str,
        id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<reqwest::Response, NodeError> {
        let mut req = self.http.get(format!("{url}/data/{id}"));
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{b}"));
        }
        if let Some(id) = mobula_http::reqid::current() {
            req = req.header(mobula_http::reqid::HEADER, &*id);
        }
        // The answer's head, not its body, is bounded: a node cut off the network while a
        // pooled connection to it stays open would hold a read forever, and no failover with it.
        let resp = tokio::time::timeout(OPEN_TIMEOUT, req.send())
            .await
            .map_err(|_| {
                NodeError::Unreachable(format!("no answer from {url} in {OPEN_TIMEOUT:?}"))
            })?
            .map_err(unreachable)?;
        check(resp).await
    }

    /// Open all of data `id`, zstd-compressed on the wire (for transfers between nodes) when
    /// the node is on another host: over loopback compressing spends CPU to save nothing.
    pub async fn get_zstd(&self, url: &str, id: &str) -> Result<reqwest::Response, NodeError> {
        if is_loopback(url) {
            return self.get(url, id, None).await;
        }
        let resp = self
            .http
            .get(format!("{url}/data/{id}"))
            .header("accept-encoding", "zstd")
            .send()
            .await
            .map_err(unreachable)?;
        check(resp).await
    }

    /// Delete data `id` on the node at `url`.
    pub async fn delete(&self, url: &str, id: &str) -> Result<(), NodeError> {
        let resp = self
            .http
            .delete(format!("{url}/data/{id}"))
            .send()
            .await
            .map_err(unreachable)?;
        check(resp).await.map(|_| ())
    }

    /// Build data `id` on the node at `url` by concatenating `parts` held there.
    pub async fn concat(
        &self,
        url: &str,
        id: &str,
        parts: Vec<String>,
    ) -> Result<Written, NodeError> {
        let resp = self
            .http
            .post(format!("{url}/data/{id}/concat"))
            .json(&Concat { parts })
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// Have the node at `url` copy data `id` from the node at `from` (repair).
    pub async fn fetch(
        &self,
        url: &str,
        id: &str,
        from: &str,
        blake3: &str,
    ) -> Result<Written, NodeError> {
        let resp = self
            .http
            .post(format!("{url}/data/{id}/fetch"))
            .json(&Fetch {
                from: from.into(),
                blake3: blake3.into(),
            })
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// Verify every data file on the node now.
    pub async fn scrub(&self, url: &str) -> Result<crate::api::ScrubReport, NodeError> {
        let resp = self
            .http
            .post(format!("{url}/scrub"))
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// Take a snapshot of the node's volume.
    pub async fn snapshot_create(
        &self,
        url: &str,
        name: &str,
    ) -> Result<crate::volume::Snapshot, NodeError> {
        let resp = self
            .http
            .post(format!("{url}/snapshots"))
            .json(&NewSnapshot { name: name.into() })
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// The node's snapshots.
    pub async fn snapshots(&self, url: &str) -> Result<Vec<crate::volume::Snapshot>, NodeError> {
        let resp = self
            .http
            .get(format!("{url}/snapshots"))
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }

    /// Delete one of the node's snapshots.
    pub async fn snapshot_delete(&self, url: &str, name: &str) -> Result<(), NodeError> {
        let resp = self
            .http
            .delete(format!("{url}/snapshots/{name}"))
            .send()
            .await
            .map_err(unreachable)?;
        check(resp).await.map(|_| ())
    }

    /// The node's identity and space.
    pub async fn status(&self, url: &str) -> Result<Status, NodeError> {
        let resp = self
            .http
            .get(format!("{url}/status"))
            .send()
            .await
            .map_err(unreachable)?;
        let resp = check(resp).await?;
        resp.json().await.map_err(unreachable)
    }
}

/// Whether the node at `url` is on this machine's loopback (where compressing a transfer
/// costs CPU and saves nothing).
pub fn is_loopback(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = u.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_told_from_other_hosts() {
        assert!(is_loopback("http://127.0.0.1:7001"));
        assert!(is_loopback("http://127.3.0.9:7001/"));
        assert!(is_loopback("http://[::1]:7001"));
        assert!(is_loopback("http://localhost:7001"));
        assert!(!is_loopback("http://10.77.0.5:7001"));
        assert!(!is_loopback("http://node3.example:7001"));
        assert!(!is_loopback("not a url"));
    }

    /// A node that takes the connection and then says nothing (its link cut under a kept-alive
    /// connection looks the same): the read gives up as `Unreachable`, so the caller fails over.
    #[tokio::test]
    async fn a_read_from_a_silent_node_gives_up_in_time() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (conn, _) = l.accept().await.unwrap();
            tokio::time::sleep(OPEN_TIMEOUT * 3).await;
            drop(conn);
        });
        let t = std::time::Instant::now();
        let r = NodeClient::new().get(&url, "x", None).await;
        assert!(matches!(r, Err(NodeError::Unreachable(_))), "{r:?}");
        assert!(r.unwrap_err().is_node_fault());
        assert!(t.elapsed() < OPEN_TIMEOUT * 2);
        held.abort();
    }
}
