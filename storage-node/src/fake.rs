//! In-memory storage nodes for unit tests of failure handling (feature `fake`), after
//! mountpoint-s3's mock and failure clients: data kept per (node URL, id), and a [`Fault`]
//! injected per node. Real enough to be trusted by the tests that use it: bodies are consumed
//! as a node would (a fault after N bytes fails mid-body, an aborted body ends as
//! [`NodeError::Aborted`]), `Content-MD5` is checked, sizes and blake3 are computed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use md5::Digest;
use mobula_http::{ApiError, Code};

use crate::api::Written;
use crate::client::{NodeError, UploadAborted};
use crate::data_path::{BodyStream, DataNodes, Opened};

/// A failure injected into one fake node.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Refuses every request before taking a byte (a dead node).
    Down,
    /// Takes this many bytes of a PUT body, then fails (a node dying mid-upload).
    PutFailsAfter(u64),
    /// Serves this many bytes of a read, then fails (a node dying mid-read).
    ReadFailsAfter(u64),
    /// Answers every request with this error of its own.
    Answer(ApiError),
    /// Works, but answers a concatenation (multipart commit) with this error of its own.
    ConcatAnswers(ApiError),
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<(String, String), Bytes>,
    faults: HashMap<String, Fault>,
    /// Every PUT and delete, in order: (url, id).
    puts: Vec<(String, String)>,
    deletes: Vec<(String, String)>,
    /// Whether writes may go to all their copies on one call, and how many did.
    together: bool,
    together_calls: usize,
}

/// Fake storage nodes, each named by a URL.
#[derive(Debug, Default)]
pub struct FakeNodes {
    state: Mutex<State>,
}

impl FakeNodes {
    pub fn new() -> Arc<FakeNodes> {
        Arc::new(FakeNodes::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, node `url` fails as `fault` says.
    pub fn fail(&self, url: &str, fault: Fault) {
        self.lock().faults.insert(url.to_string(), fault);
    }

    /// Node `url` works again.
    pub fn heal(&self, url: &str) {
        self.lock().faults.remove(url);
    }

    /// Store `data` as `id` on `url` directly.
    pub fn insert(&self, url: &str, id: &str, data: impl Into<Bytes>) {
        self.lock()
            .files
            .insert((url.to_string(), id.to_string()), data.into());
    }

    /// The bytes of `id` on `url`, if it is there.
    pub fn get(&self, url: &str, id: &str) -> Option<Bytes> {
        self.lock()
            .files
            .get(&(url.to_string(), id.to_string()))
            .cloned()
    }

    /// How many files node `url` holds.
    pub fn files_on(&self, url: &str) -> usize {
        self.lock().files.keys().filter(|(u, _)| u == url).count()
    }

    /// Every PUT asked of the nodes so far: (url, id).
    pub fn puts(&self) -> Vec<(String, String)> {
        self.lock().puts.clone()
    }

    /// Every delete asked of the nodes so far: (url, id).
    pub fn deletes(&self) -> Vec<(String, String)> {
        self.lock().deletes.clone()
    }

    /// From now on, every set of nodes can be written together
    /// ([`DataNodes::put_together`]) when `on` — as nodes in the gateway's process on one
    /// journal can.
    pub fn write_together(&self, on: bool) {
        self.lock().together = on;
    }

    /// How many writes went to all their copies on one call.
    pub fn together_calls(&self) -> usize {
        self.lock().together_calls
    }

    fn fault(&self, url: &str) -> Option<Fault> {
        self.lock().faults.get(url).cloned()
    }
}

fn down() -> NodeError {
    NodeError::Unreachable("connection refused (fake)".into())
}

/// Store `data` as `id` on `url`, or fail as the node's fault says (one copy of a write made
/// together).
fn put_whole(nodes: &FakeNodes, url: &str, id: &str, data: &Bytes) -> Result<Written, NodeError> {
    match nodes.fault(url) {
        Some(Fault::Down) => return Err(down()),
        Some(Fault::Answer(e)) => return Err(NodeError::Answered(e)),
        Some(Fault::PutFailsAfter(n)) if data.len() as u64 > n => {
            return Err(NodeError::Unreachable("connection reset (fake)".into()))
        }
        _ => {}
    }
    nodes.insert(url, id, data.clone());
    Ok(Written {
        size: data.len() as u64,
        md5: String::new(),
        blake3: blake3::hash(data).to_hex().to_string(),
    })
}

impl DataNodes for FakeNodes {
    fn can_put_together(&self, _urls: &[String]) -> bool {
        self.lock().together
    }

    fn put_together(
        &self,
        urls: &[String],
        id: &str,
        chunks: Vec<Bytes>,
    ) -> Option<BoxFuture<'static, Vec<Result<Written, NodeError>>>> {
        if !self.can_put_together(urls) {
            return None;
        }
        self.lock().together_calls += 1;
        let data = Bytes::from(chunks.concat());
        let answers = urls.iter().map(|u| put_whole(self, u, id, &data)).collect();
        Some(Box::pin(futures::future::ready(answers)))
    }

    fn put<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        mut body: BodyStream,
        expected_md5: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        Box::pin(async move {
            self.lock().puts.push((url.to_string(), id.to_string()));
            let limit = match self.fault(url) {
                Some(Fault::Down) => return Err(down()),
                Some(Fault::Answer(e)) => return Err(NodeError::Answered(e)),
                Some(Fault::PutFailsAfter(n)) => Some(n),
                _ => None,
            };
            let mut data = Vec::new();
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(b) => data.extend_from_slice(&b),
                    Err(e) if e.get_ref().is_some_and(|i| i.is::<UploadAborted>()) => {
                        return Err(NodeError::Aborted)
                    }
                    Err(e) => return Err(NodeError::Unreachable(e.to_string())),
                }
                if limit.is_some_and(|n| data.len() as u64 > n) {
                    return Err(NodeError::Unreachable("connection reset (fake)".into()));
                }
            }
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
            if expected_md5.is_some_and(|m| m != md5) {
                return Err(NodeError::Answered(ApiError::new(
                    Code::ContentMD5Mismatch,
                    "content-md5 does not match",
                )));
            }
            let w = Written {
                size: data.len() as u64,
                md5,
                blake3: blake3::hash(&data).to_hex().to_string(),
            };
            self.insert(url, id, data);
            Ok(w)
        })
    }

    fn open<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'a, Result<Opened, NodeError>> {
        Box::pin(async move {
            let fails_after = match self.fault(url) {
                Some(Fault::Down) => return Err(down()),
                Some(Fault::Answer(e)) => return Err(NodeError::Answered(e)),
                Some(Fault::ReadFailsAfter(n)) => Some(n as usize),
                _ => None,
            };
            let data = self.get(url, id).ok_or_else(|| {
                NodeError::Answered(ApiError::new(Code::ResourceNotFound, "no such data"))
            })?;
            let size = data.len() as u64;
            let (a, b) = range.unwrap_or((0, size.saturating_sub(1)));
            let slice = data.slice(a as usize..(b as usize + 1).min(data.len()));
            let (good, fail) = match fails_after {
                Some(n) if n < slice.len() => (slice.slice(..n), true),
                _ => (slice, false),
            };
            let chunks: Vec<Result<Bytes, NodeError>> = good
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .chain(fail.then(|| Err(NodeError::Unreachable("reset mid-read (fake)".into()))))
                .collect();
            Ok(Opened {
                size: Some(size),
                stream: Box::pin(futures::stream::iter(chunks)),
            })
        })
    }

    fn delete<'a>(&'a self, url: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            if let Some(Fault::Down) = self.fault(url) {
                return Err(down());
            }
            let mut s = self.lock();
            s.deletes.push((url.to_string(), id.to_string()));
            s.files.remove(&(url.to_string(), id.to_string()));
            Ok(())
        })
    }

    fn concat<'a>(
        &'a self,
        url: &'a str,
        id: &'a str,
        parts: Vec<String>,
    ) -> BoxFuture<'a, Result<Written, NodeError>> {
        Box::pin(async move {
            match self.fault(url) {
                Some(Fault::Down) => return Err(down()),
                Some(Fault::Answer(e) | Fault::ConcatAnswers(e)) => {
                    return Err(NodeError::Answered(e))
                }
                _ => {}
            }
            let mut data = Vec::new();
            for p in &parts {
                let b = self.get(url, p).ok_or_else(|| {
                    NodeError::Answered(ApiError::new(Code::ResourceNotFound, "no such part"))
                })?;
                data.extend_from_slice(&b);
            }
            let w = Written {
                size: data.len() as u64,
                md5: base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data)),
                blake3: blake3::hash(&data).to_hex().to_string(),
            };
            self.insert(url, id, data);
            Ok(w)
        })
    }
}
