//! The seam between the gateway and the storage nodes' data path: [`DataNodes`] is what a
//! gateway needs from nodes to write, read, delete and concatenate data. [`crate::NodeClient`]
//! is the real one (HTTP); with the `fake` feature, [`crate::fake::FakeNodes`] keeps data in
//! memory and fails on command, so the gateway's failure handling has fast unit tests.

use std::pin::Pin;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use crate::api::Written;
use crate::client::{NodeClient, NodeError};

/// A body streamed to a node.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;
/// Bytes streamed from a node; an error ends the stream (the copy failed mid-body).
pub type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, NodeError>> + Send>>;

/// An opened read: the data's whole size as the node reports it, and the asked-for bytes.
pub struct Opened {
    pub size: Option<u64>,
    pub stream: DataStream,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("size", &self.size).finish()
    }
}

/// What a gateway needs from the storage nodes' data path (each node named by URL per call).
pub trait DataNodes: Send + Sync + std::fmt::Debug {
    /// Stream `body` into data `id` on `url`; resolves once it is durable there.
    fn put<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        body: BodyStream,
        expected_md5: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Written, NodeError>>;

    /// Whether [`DataNodes::put_together`] would write to every node of `urls`.
    fn can_put_together(&self, _urls: &[String]) -> bool {
        false
    }

    /// Write the whole small body `chunks` as `id` to every node of `urls` on one call, where
    /// this data path can (see [`crate::local::LocalFirst`]); one answer per url, in order.
    /// `None` where it cannot: the caller streams to each node with [`DataNodes::put`].
    fn put_together(
        &self,
        _urls: &[String],
        _id: &str,
        _chunks: Vec<Bytes>,
    ) -> Option<BoxFuture<'static, Vec<Result<Written, NodeError>>>> {
        None
    }

    /// Open data `id` on `url` (optionally the inclusive byte range `range`).
    fn open<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<Opened, NodeError>>;

    /// Delete data `id` on `url` (idempotent).
    fn delete<'a>(&'a self, url: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), NodeError>>;

    /// Build data `id` on `url` by concatenating `parts` held there.
    fn concat<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        parts: Vec<String>,
    ) -> BoxFuture<'a, Result<Written, NodeError>>;
}

impl DataNodes for NodeClient {
    fn put<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        body: BodyStream,
        expected_md5: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        Box::pin(NodeClient::put(self, url, id, body, expected_md5))
    }

    fn open<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<Opened, NodeError>> {
        Box::pin(async move {
            let resp = self.get(url, id, range).await?;
            let size = resp
                .headers()
                .get("x-data-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let stream = resp
                .bytes_stream()
                .map(|r| r.map_err(crate::client::unreachable));
            Ok(Opened {
                size,
                stream: Box::pin(stream),
            })
        })
    }

    fn delete<'a>(&'a self, url: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(NodeClient::delete(self, url, id))
    }

    fn concat<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        parts: Vec<String>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        Box::pin(NodeClient::concat(self, url, id, parts))
    }
}
