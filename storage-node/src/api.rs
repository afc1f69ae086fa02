//! The storage node's wire types: the bodies of its API (see `server.rs` for the routes)
//! and the data ids every part of Mobula names data files by. What the gateway, the jobs crate
//! and peers share with a node lives here, not in the server or the store.

use serde::{Deserialize, Serialize};

/// Whether `id` is a valid data id (32 lower-case hex digits). Nothing else ever reaches a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random data id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Answer of a write: what is now durable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub size: u64,
    /// Base64 MD5 (when the writer asked for it: concat, or `x-expected-md5`).
    #[serde(default)]
    pub md5: String,
    /// Hex blake3 of the whole file, as the node computed it.
    #[serde(default)]
    pub blake3: String,
}

/// Body of `POST /data/:id/concat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Concat {
    pub parts: Vec<String>,
}

/// Body of `POST /data/:id/fetch`: copy data from a peer (repair).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetch {
    /// Base URL of a node holding a good copy.
    pub from: String,
    /// Expected hex blake3 of the whole data.
    pub blake3: String,
}

/// How the message of a fetch's 503 begins when the *source* failed (unreachable, or its
/// stream broke), not the fetching node: the caller then avoids the source, not the target.
pub const FROM_SOURCE: &str = "fetching from ";

/// Whether a failed fetch failed at its source (see [`FROM_SOURCE`]).
pub fn source_failed(e: &crate::NodeError) -> bool {
    e.answered()
        .is_some_and(|a| a.message.starts_with(FROM_SOURCE))
}

/// Answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    pub volume: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Body of `POST /snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewSnapshot {
    pub name: String,
}

/// What one scrub pass found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    pub files: u64,
    pub bytes: u64,
    /// Ids whose copy on this node failed verification.
    pub bad: Vec<String>,
    /// Ids metadata says this node holds but that are not here.
    #[serde(default)]
    pub missing: Vec<String>,
    pub seconds: f64,
}
