//! Request and response types of the metadata API, shared by the server and its client.

use std::collections::BTreeMap;

use mobula_http::{ApiError, Code};
use serde::{Deserialize, Serialize};

pub use crate::paths::*;

/// Stored HTTP headers of an object (content type excluded), lower-case names.
pub type Headers = BTreeMap<String, String>;

/// What a namespace entry is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Directory,
    Object,
}

/// The stored bytes behind one or more objects (links share it). Immutable once written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Data {
    /// Data id: 32 lower-case hex digits; also the object's ETag.
    pub id: String,
    pub size: u64,
    /// Base64 MD5 of the bytes.
    pub md5: String,
    /// Hex blake3 of the bytes.
    pub blake3: String,
    /// Number of copies asked for.
    pub durability: u8,
    /// Storage nodes holding a durable copy.
    pub nodes: Vec<String>,
}

/// One namespace entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Full path, e.g. `/admin/stor/a/b`.
    pub path: String,
    pub name: String,
    pub kind: Kind,
    /// Milliseconds since the Unix epoch.
    pub mtime: i64,
    /// Number of children (directories only).
    pub children: u64,
    pub content_type: String,
    pub headers: Headers,
    /// The bytes (objects only).
    pub data: Option<Data>,
}

/// Preconditions checked atomically with a write (SPEC §3 conditional PUT).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Preconditions {
    /// ETags any of which must match the current object (`*` = it must exist).
    pub if_match: Option<Vec<String>>,
    /// ETags none of which may match (`*` = it must not exist).
    pub if_none_match: Option<Vec<String>>,
    /// The current object must not be newer than this (ms since epoch).
    pub if_unmodified_since: Option<i64>,
}

/// Create or replace an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutObject {
    /// Create missing parent directories first (`mkdir -p`, same transaction).
    #[serde(default)]
    pub parents: bool,
    pub path: String,
    pub data: Data,
    pub content_type: String,
    pub headers: Headers,
    #[serde(default)]
    pub preconditions: Preconditions,
}

/// Create a snaplink at `path` sharing the data of `source`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutLink {
    pub path: String,
    pub source: String,
    #[serde(default)]
    pub preconditions: Preconditions,
}

/// Replace an object's stored headers without touching its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateMetadata {
    pub path: String,
    pub content_type: String,
    pub headers: Headers,
}

/// Delete an object, link or empty directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteEntry {
    pub path: String,
    #[serde(default)]
    pub preconditions: Preconditions,
}

/// Order of a listing.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// By name, ascending by default.
    #[default]
    Name,
    /// By modification time, newest first by default (ties broken by name).
    Mtime,
}

/// A page of a directory listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListQuery {
    pub path: String,
    /// Inclusive: the page starts at this name.
    pub marker: Option<String>,
    pub limit: u32,
    #[serde(default)]
    pub sort: SortBy,
    #[serde(default)]
    pub reverse: bool,
}

/// One page of entries plus the directory's total entry count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage {
    pub total: u64,
    pub entries: Vec<Entry>,
}

/// A page of a bucket's keys (SPEC §8): keys after `start_after` that begin with `prefix`, in
/// UTF-8 byte order, those holding `delimiter` after the prefix rolled up into one common
/// prefix each.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyQuery {
    /// The bucket's path, `/a/buckets/b`.
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub delimiter: String,
    /// Exclusive. When it is itself a common prefix (it ends at a delimiter after `prefix`),
    /// every key under it is skipped too, so a page may resume after a returned prefix.
    #[serde(default)]
    pub start_after: Option<String>,
    /// Most items (objects plus common prefixes) in the page.
    pub limit: u32,
}

/// One item of a key listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyItem {
    Object(Box<Entry>),
    /// A common prefix (it ends with the delimiter).
    Prefix(String),
}

impl KeyItem {
    /// The key or prefix: where the next page starts after.
    pub fn marker(&self) -> &str {
        match self {
            KeyItem::Object(e) => crate::paths::split_path(&e.path).1,
            KeyItem::Prefix(p) => p,
        }
    }
}

/// A page of a key listing; `truncated` when more items follow the last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPage {
    pub items: Vec<KeyItem>,
    pub truncated: bool,
}

/// A storage node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    pub id: String,
    pub url: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Tasks its job agent runs at once (0: no agent).
    #[serde(default)]
    pub slots: u32,
}

/// A registered storage node as the registry sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub url: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Milliseconds since its last heartbeat (as of the listing).
    pub last_seen_ago_ms: i64,
    /// Tasks its job agent runs at once (0: no agent).
    #[serde(default)]
    pub slots: u32,
    /// `active`, `draining` or `dead` (see [`NODE_STATES`]).
    #[serde(default = "active")]
    pub state: String,
}

fn active() -> String {
    "active".into()
}

/// A node's lifecycle: `active` takes new copies and tasks; `draining` (an operator asked) and
/// `dead` (silent past the dead-after limit) take none, and their copies are re-made elsewhere.
pub const NODE_STATES: &[&str] = &["active", "draining", "dead"];

impl NodeInfo {
    /// Whether new copies and tasks may go to this node (by its state; health is apart).
    pub fn active(&self) -> bool {
        self.state == "active"
    }
}

/// Set node `id`'s state (`node.set_state`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeState {
    pub id: String,
    pub state: String,
}

/// Queue the re-making of the copies on node `id` after data id `after`, `limit` of them
/// (`node.evacuate`); the answer is the last data id queued (`None`: no more).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evacuate {
    pub id: String,
    pub after: String,
    pub limit: u32,
}

/// The state of the data as a whole, for `mobula status` (`cluster.summary`; a scan of every
/// data item: an operator's question, not a request path's).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterSummary {
    /// Data items (an object and its snaplinks share one).
    pub data: u64,
    /// Data items with fewer copies on healthy nodes (heard from within [`STALE`]) than their
    /// durability asks for.
    pub under_replicated: u64,
    /// Copies found bad or missing, waiting to be re-made.
    pub repairs: u64,
    /// Data items no object refers to any more, waiting to be deleted from their nodes.
    pub garbage: u64,
}

/// A node that has not heartbeated for this long is not healthy.
pub const STALE: std::time::Duration = std::time::Duration::from_secs(5);

impl NodeInfo {
    /// Has it heartbeated within [`STALE`], `since_listed` after the listing was taken?
    pub fn fresh(&self, since_listed: std::time::Duration) -> bool {
        std::time::Duration::from_millis(self.last_seen_ago_ms.max(0) as u64) + since_listed < STALE
    }
}

/// Data no longer referenced, to be deleted from the nodes that hold it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Garbage {
    pub data_id: String,
    pub nodes: Vec<String>,
}

/// An SSH public key of an account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountKey {
    pub account: String,
    /// `aa:bb:…` MD5 fingerprint.
    pub md5: String,
    /// `SHA256:…` fingerprint.
    pub sha256: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    pub created: i64,
}

/// An S3 access key of an account (SPEC §8). `secret` is empty in listings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct S3Key {
    pub access_key: String,
    pub account: String,
    pub secret: String,
    pub created: i64,
}

/// Names a key of an account by either fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRef {
    pub account: String,
    pub fingerprint: String,
}

/// A copy of some data on some node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Copy {
    pub data_id: String,
    pub node: String,
}

/// A bad copy to re-create: the data (with its remaining good nodes) and the node it was lost on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Repair {
    pub data: Data,
    pub bad_node: String,
    pub queued: i64,
}

/// A multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub account: String,
    pub object_path: String,
    pub content_type: String,
    pub headers: Headers,
    pub durability: u8,
    /// Nodes every part (and the final object) is written to.
    pub nodes: Vec<String>,
    /// `created`, `done` or `aborted`.
    pub state: String,
    pub created: i64,
    /// The part ETags the upload was committed with (state `done`).
    pub committed_parts: Option<Vec<String>>,
    pub parts: Vec<Part>,
}

/// One uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub n: u32,
    pub data: Data,
}

/// Record (or replace) part `n` of an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutPart {
    pub upload_id: String,
    pub n: u32,
    pub data: Data,
    /// `data` already exists (an S3 UploadPartCopy of a whole object): take one more reference
    /// to it instead of recording new data.
    #[serde(default)]
    pub link: bool,
}

/// Finish an upload: the concatenated data becomes the object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitUpload {
    pub upload_id: String,
    pub parts: Vec<String>,
    pub data: Data,
    /// Headers added to the upload's own (an S3 multipart ETag).
    #[serde(default)]
    pub headers: Headers,
    /// Checked atomically against the target object at commit.
    #[serde(default)]
    pub preconditions: Preconditions,
}

/// Open uploads of an account whose target path starts with `prefix`, after the pair
/// (`after_path`, `after_id`), in (path, id) order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadQuery {
    pub account: String,
    pub prefix: String,
    #[serde(default)]
    pub after_path: String,
    #[serde(default)]
    pub after_id: String,
    pub limit: u32,
}

/// A plain name (snapshot, image, task key, job, account as a directory name): 1 to `max`
/// of `[A-Za-z0-9._-]`, not starting with `.` — safe as one path component anywhere.
pub fn plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new job (`job.create`); its directories `/:account/jobs/:id/stor` are made with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    pub id: String,
    pub account: String,
    pub name: String,
    /// The job's phases as the user gave them (JSON, validated by the gateway).
    pub spec: String,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobRow {
    pub id: String,
    pub account: String,
    pub name: String,
    pub spec: String,
    /// `queued`, `running` or `done`.
    pub state: String,
    pub end_requested: bool,
    pub cancel_requested: bool,
    /// ms since the epoch.
    pub created: i64,
    pub done: Option<i64>,
    /// Counters (JSON) as of the last logged event.
    pub stats: String,
    /// Inputs added so far.
    pub inputs: u64,
    /// Inputs the coordinator has taken in.
    pub consumed: u64,
    /// Events logged.
    pub events: u64,
}

impl JobRow {
    /// What a watcher of the job has seen: changes whenever its state, counters, inputs or
    /// requests change (`job.wait` answers when it differs from the caller's).
    pub fn version(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}{}",
            self.state,
            self.events,
            self.inputs,
            self.consumed,
            u8::from(self.end_requested),
            u8::from(self.cancel_requested)
        )
    }

    /// Whether the job has only moved on since a watcher's `seen` version: still running in
    /// the state `seen` was taken in (progress, which `job.wait` may gather before answering).
    pub fn moved_on_from(&self, seen: &str) -> bool {
        seen.split('.').next() == Some(self.state.as_str()) && self.state != "done"
    }
}

/// Wait for a job to change (`job.wait`): answers as soon as its version differs from `seen`
/// (at once when it already does), or after `timeout_ms` (at most 10 s) with it unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobWait {
    pub id: String,
    pub seen: String,
    pub timeout_ms: u64,
    /// How long a running job's progress may gather before it is answered (0: at once).
    #[serde(default)]
    pub settle_ms: u64,
}

/// Add inputs to a job (and maybe end its input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddInputs {
    pub id: String,
    pub paths: Vec<String>,
    pub end: bool,
}

/// Read part of one of a job's lists (`in`, `ev`, `out`, `err`, `fail`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecords {
    pub id: String,
    pub kind: String,
    pub from: u64,
    pub limit: u32,
}

/// What the coordinator logs in one transaction: events (only if `expect_events` are logged
/// so far — a second coordinator loses), records, and the job's new summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobAppend {
    pub id: String,
    pub expect_events: u64,
    pub events: Vec<String>,
    pub out: Vec<String>,
    pub err: Vec<String>,
    pub fail: Vec<String>,
    pub consumed: u64,
    pub stats: String,
    pub state: String,
    pub done: Option<i64>,
    /// Task outputs to create with these events (their data already durable on its nodes):
    /// an output object exists exactly when the event reporting it is logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<PutObject>,
}

/// Take or renew lease `name` for `ttl_ms`; granted when free, expired, or already `owner`'s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub ttl_ms: i64,
}

/// Top-level areas created with every account.
pub const AREAS: [&str; 5] = ["stor", "public", "jobs", "uploads", "buckets"];

fn strip(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/").trim_matches('"')
}

/// Evaluate `pre` against the current entry at a path.
pub fn check_preconditions(current: Option<&Entry>, pre: &Preconditions) -> Result<(), ApiError> {
    let etag = current.and_then(|e| e.data.as_ref()).map(|d| d.id.as_str());
    let failed = |what: &str| Err(ApiError::new(Code::PreconditionFailed, what.to_string()));
    if let Some(tags) = &pre.if_match {
        let ok = tags
            .iter()
            .any(|t| strip(t) == "*" && current.is_some() || Some(strip(t)) == etag);
        if !ok {
            return failed("if-match did not match");
        }
    }
    if let Some(tags) = &pre.if_none_match {
        let hit = tags
            .iter()
            .any(|t| strip(t) == "*" && current.is_some() || Some(strip(t)) == etag);
        if hit {
            return failed("if-none-match matched");
        }
    }
    if let (Some(since), Some(cur)) = (pre.if_unmodified_since, current) {
        // HTTP dates have one-second resolution.
        if cur.mtime / 1000 > since / 1000 {
            return failed("object modified since if-unmodified-since");
        }
    }
    Ok(())
}

/// Both fingerprints of an OpenSSH public key line: (`aa:bb:…` MD5, `SHA256:…`).
pub fn fingerprints(openssh: &str) -> Result<(String, String), ApiError> {
    use md5::Digest;
    let key = ssh_key::PublicKey::from_openssh(openssh.trim()).map_err(|e| {
        ApiError::new(
            Code::InvalidArgument,
            format!("not an OpenSSH public key: {e}"),
        )
    })?;
    let blob = key
        .to_bytes()
        .map_err(|e| ApiError::new(Code::InvalidArgument, format!("public key: {e}")))?;
    let md5: Vec<String> = md5::Md5::digest(&blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sha = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    Ok((md5.join(":"), sha))
}
