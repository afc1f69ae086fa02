//! Client of the storage-node API, used by the gateway (and by peers for repair).

use bytes::Bytes;
use futures::Stream;
use mobula_http::{ApiError, Code};

use crate::server::{Concat, Fetch, Status, Written};

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

fn unreachable(url: &str, e: reqwest::Error) -> ApiError {
    ApiError::new(
        Code::ServiceUnavailable,
        format!("storage node {url} unreachable: {e}"),
    )
}

async fn check(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| unreachable(url, e))?;
    Err(ApiError::from_wire(status, &body))
}

impl NodeClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
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
    ) -> Result<Written, ApiError>
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
        let resp = req.send().await.map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// Open data `id` (optionally the inclusive byte range `range`) for streaming.
    pub async fn get(
        &self,
        url: &str,
        id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<reqwest::Response, ApiError> {
        let mut req = self.http.get(format!("{url}/data/{id}"));
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{b}"));
        }
        let resp = req.send().await.map_err(|e| unreachable(url, e))?;
        check(url, resp).await
    }

    /// Open all of data `id`, zstd-compressed on the wire (for transfers between nodes).
    pub async fn get_zstd(&self, url: &str, id: &str) -> Result<reqwest::Response, ApiError> {
        let resp = self
            .http
            .get(format!("{url}/data/{id}"))
            .header("accept-encoding", "zstd")
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        check(url, resp).await
    }

    /// Delete data `id` on the node at `url`.
    pub async fn delete(&self, url: &str, id: &str) -> Result<(), ApiError> {
        let resp = self
            .http
            .delete(format!("{url}/data/{id}"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        check(url, resp).await.map(|_| ())
    }

    /// Build data `id` on the node at `url` by concatenating `parts` held there.
    pub async fn concat(
        &self,
        url: &str,
        id: &str,
        parts: Vec<String>,
    ) -> Result<Written, ApiError> {
        let resp = self
            .http
            .post(format!("{url}/data/{id}/concat"))
            .json(&Concat { parts })
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// Have the node at `url` copy data `id` from the node at `from` (repair).
    pub async fn fetch(
        &self,
        url: &str,
        id: &str,
        from: &str,
        blake3: &str,
    ) -> Result<Written, ApiError> {
        let resp = self
            .http
            .post(format!("{url}/data/{id}/fetch"))
            .json(&Fetch {
                from: from.into(),
                blake3: blake3.into(),
            })
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// Verify every data file on the node now.
    pub async fn scrub(&self, url: &str) -> Result<crate::scrub::ScrubReport, ApiError> {
        let resp = self
            .http
            .post(format!("{url}/scrub"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// Take a snapshot of the node's volume.
    pub async fn snapshot_create(
        &self,
        url: &str,
        name: &str,
    ) -> Result<crate::volume::Snapshot, ApiError> {
        let resp = self
            .http
            .post(format!("{url}/snapshots"))
            .json(&crate::server::NewSnapshot { name: name.into() })
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// The node's snapshots.
    pub async fn snapshots(&self, url: &str) -> Result<Vec<crate::volume::Snapshot>, ApiError> {
        let resp = self
            .http
            .get(format!("{url}/snapshots"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }

    /// Delete one of the node's snapshots.
    pub async fn snapshot_delete(&self, url: &str, name: &str) -> Result<(), ApiError> {
        let resp = self
            .http
            .delete(format!("{url}/snapshots/{name}"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        check(url, resp).await.map(|_| ())
    }

    /// The node's identity and space.
    pub async fn status(&self, url: &str) -> Result<Status, ApiError> {
        let resp = self
            .http
            .get(format!("{url}/status"))
            .send()
            .await
            .map_err(|e| unreachable(url, e))?;
        let resp = check(url, resp).await?;
        resp.json().await.map_err(|e| unreachable(url, e))
    }
}
