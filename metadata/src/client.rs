//! Typed client of the metadata service, used by the gateway and the storage nodes.

use mobula_http::{ApiError, Code};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::*;
use crate::server::{Claim, Ids, Limit, Name, OnNode, Release, Repaired};

/// A handle on a metadata service at a base URL (cheap to clone).
#[derive(Debug, Clone)]
pub struct MetadataClient {
    base: String,
    http: reqwest::Client,
}

/// The metadata service could not be reached: a 503 whose message names the cause but never
/// the service's address (it may reach the public). A request that may have been sent (the
/// connection broke after it was made) is told apart: its outcome is unknown
/// ([`outcome_unknown`]).
fn unreachable(e: reqwest::Error) -> ApiError {
    let sent = !e.is_connect();
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    let what = if sent { LOST } else { "metadata unreachable" };
    ApiError::new(Code::ServiceUnavailable, format!("{what}: {msg}"))
}

/// The start of the message of an error whose request may have reached the service.
const LOST: &str = "metadata answer lost";

/// True when a write failed without an answer: the service may have committed it (it crashed
/// or the connection broke after the request was sent). Whatever the write referred to must
/// then be kept — data a failed PUT wrote is left for the nodes' orphan sweep, which asks
/// the service what it knows — never deleted on the spot.
pub fn outcome_unknown(e: &ApiError) -> bool {
    e.code == Code::ServiceUnavailable && e.message.starts_with(LOST)
}

/// True when the service or its database could not be reached (down, or restarting): a read
/// that failed so may be tried again after a pause. (The database's failures carry
/// [`crate::Error::Database`]'s "metadata database" in their message.)
pub fn unavailable(e: &ApiError) -> bool {
    e.code == Code::ServiceUnavailable
        || (e.code == Code::InternalError && e.message.contains("metadata database"))
}

impl MetadataClient {
    /// A client of the service at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(mobula_http::POOL_IDLE_PER_HOST)
            .pool_idle_timeout(mobula_http::POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .expect("a plain HTTP client always builds");
        MetadataClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        q: &Q,
    ) -> Result<R, ApiError> {
        if let Some(local) = crate::local::get(&self.base) {
            let body = serde_json::to_vec(q).map_err(ApiError::internal)?;
            let (status, body) = local.call(method, body.into()).await;
            if !status.is_success() {
                return Err(ApiError::from_wire(status, &body));
            }
            return serde_json::from_slice(&body)
                .map_err(|e| ApiError::internal(format!("metadata answer: {e}")));
        }
        let mut req = self
            .http
            .post(format!("{}/rpc/{method}", self.base))
            .json(q);
        if let Some(id) = mobula_http::reqid::current() {
            req = req.header(mobula_http::reqid::HEADER, &*id);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(ApiError::from_wire(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::internal(format!("metadata answer: {e}")))
    }

    /// Wait until the service answers `/ping` (at most `tries` × 50 ms).
    pub async fn ping(&self) -> Result<(), ApiError> {
        if crate::local::get(&self.base).is_some() {
            return Ok(());
        }
        let resp = self
            .http
            .get(format!("{}/ping", self.base))
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::ServiceUnavailable,
                "metadata not ready",
            ))
        }
    }

    pub async fn create_account(&self, name: &str) -> Result<bool, ApiError> {
        self.call("account.create", &Name { name: name.into() })
            .await
    }
    pub async fn account_exists(&self, name: &str) -> Result<bool, ApiError> {
        self.call("account.exists", &Name { name: name.into() })
            .await
    }
    pub async fn accounts(&self) -> Result<Vec<String>, ApiError> {
        self.call("account.list", &()).await
    }
    pub async fn add_key(&self, k: &AccountKey) -> Result<(), ApiError> {
        self.call("key.add", k).await
    }
    pub async fn keys(&self, account: &str) -> Result<Vec<AccountKey>, ApiError> {
        self.call(
            "key.list",
            &Name {
                name: account.into(),
            },
        )
        .await
    }
    pub async fn key(
        &self,
        account: &str,
        fingerprint: &str,
    ) -> Result<Option<AccountKey>, ApiError> {
        let r = KeyRef {
            account: account.into(),
            fingerprint: fingerprint.into(),
        };
        self.call("key.get", &r).await
    }
    pub async fn remove_key(&self, account: &str, fingerprint: &str) -> Result<(), ApiError> {
        let r = KeyRef {
            account: account.into(),
            fingerprint: fingerprint.into(),
        };
        self.call("key.remove", &r).await
    }
    pub async fn get(&self, path: &str) -> Result<Option<Entry>, ApiError> {
        // Every GET and HEAD asks this first: in this process, with a reader idle, it is
        // answered in place and typed (no JSON either way).
        if let Some(local) = crate::local::get(&self.base) {
            if let Some(r) = local.get_now(path) {
                return r;
            }
        }
        self.call("entry.get", &Name { name: path.into() }).await
    }
    pub async fn mkdir(&self, path: &str) -> Result<(), ApiError> {
        self.call("entry.mkdir", &Name { name: path.into() }).await
    }
    pub async fn put_object(&self, req: &PutObject) -> Result<Entry, ApiError> {
        // Every PUT ends here: in this process, typed (no JSON either way).
        if let Some(local) = crate::local::get(&self.base) {
            return local.put_object(req).await;
        }
        self.call("entry.put_object", req).await
    }
    pub async fn put_link(&self, req: &PutLink) -> Result<Entry, ApiError> {
        self.call("entry.put_link", req).await
    }
    pub async fn update_metadata(&self, req: &UpdateMetadata) -> Result<Entry, ApiError> {
        self.call("entry.update_metadata", req).await
    }
    pub async fn delete(&self, req: &DeleteEntry) -> Result<(), ApiError> {
        self.call("entry.delete", req).await
    }
    pub async fn list(&self, q: &ListQuery) -> Result<ListPage, ApiError> {
        self.call("entry.list", q).await
    }
    /// Store a new S3 access key.
    pub async fn add_s3_key(&self, k: &S3Key) -> Result<(), ApiError> {
        self.call("s3key.add", k).await
    }
    /// An account's S3 access keys (secrets left out).
    pub async fn s3_keys(&self, account: &str) -> Result<Vec<S3Key>, ApiError> {
        self.call(
            "s3key.list",
            &Name {
                name: account.into(),
            },
        )
        .await
    }
    /// S3 access key `access_key`, with its secret.
    pub async fn s3_key(&self, access_key: &str) -> Result<Option<S3Key>, ApiError> {
        self.call(
            "s3key.get",
            &Name {
                name: access_key.into(),
            },
        )
        .await
    }
    /// Remove an account's S3 access key.
    pub async fn remove_s3_key(&self, account: &str, access_key: &str) -> Result<(), ApiError> {
        let r = KeyRef {
            account: account.into(),
            fingerprint: access_key.into(),
        };
        self.call("s3key.remove", &r).await
    }
    /// Create bucket `path` (`/a/buckets/b`).
    pub async fn create_bucket(&self, path: &str) -> Result<Entry, ApiError> {
        self.call("bucket.create", &Name { name: path.into() })
            .await
    }
    /// Delete bucket `path` if empty.
    pub async fn delete_bucket(&self, path: &str) -> Result<(), ApiError> {
        self.call("bucket.delete", &Name { name: path.into() })
            .await
    }
    /// One page of a bucket's keys.
    pub async fn list_keys(&self, q: &KeyQuery) -> Result<KeyPage, ApiError> {
        self.call("bucket.list", q).await
    }
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<(), ApiError> {
        self.call("node.heartbeat", hb).await
    }
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ApiError> {
        self.call("node.list", &()).await
    }
    /// Set node `id`'s lifecycle state (`active`, `draining`, `dead`).
    pub async fn node_set_state(&self, id: &str, state: &str) -> Result<(), ApiError> {
        let a = crate::api::NodeState {
            id: id.into(),
            state: state.into(),
        };
        self.call("node.set_state", &a).await
    }
    /// Queue the re-making of every copy node `id` holds (in pages of 1,000).
    pub async fn node_evacuate(&self, id: &str) -> Result<(), ApiError> {
        let mut after = String::new();
        loop {
            let e = crate::api::Evacuate {
                id: id.into(),
                after: after.clone(),
                limit: 1000,
            };
            let last: Option<String> = self.call("node.evacuate", &e).await?;
            match last {
                Some(l) => after = l,
                None => return Ok(()),
            }
        }
    }
    /// One page of [`MetadataClient::node_evacuate`]: the last data id queued (`None`: none).
    pub async fn node_evacuate_page(
        &self,
        e: &crate::api::Evacuate,
    ) -> Result<Option<String>, ApiError> {
        self.call("node.evacuate", e).await
    }
    /// How many copies node `id` holds.
    pub async fn node_copies(&self, id: &str) -> Result<u64, ApiError> {
        self.call("node.copies", &Name { name: id.into() }).await
    }
    /// Forget node `id` (refused while it is active or holds needed copies).
    pub async fn node_remove(&self, id: &str) -> Result<(), ApiError> {
        self.call("node.remove", &Name { name: id.into() }).await
    }
    /// How the data stands as a whole (scans every data item).
    pub async fn summary(&self) -> Result<crate::api::ClusterSummary, ApiError> {
        self.call("cluster.summary", &()).await
    }
    pub async fn garbage(&self, limit: u32) -> Result<Vec<Garbage>, ApiError> {
        self.call("garbage.list", &Limit { limit }).await
    }
    pub async fn garbage_done(&self, ids: Vec<String>) -> Result<(), ApiError> {
        self.call("garbage.done", &Ids { ids }).await
    }
    pub async fn queue_garbage(&self, g: &Garbage) -> Result<(), ApiError> {
        self.call("garbage.queue", g).await
    }
    pub async fn known_data(&self, ids: Vec<String>) -> Result<Vec<String>, ApiError> {
        self.call("data.known", &Ids { ids }).await
    }
    /// A node found its copy of `data_id` bad.
    pub async fn report_bad(&self, data_id: &str, node: &str) -> Result<(), ApiError> {
        let c = Copy {
            data_id: data_id.into(),
            node: node.into(),
        };
        self.call("data.bad", &c).await
    }
    /// Ids metadata believes `node` holds, in id order, after `after`.
    pub async fn data_on_node(
        &self,
        node: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, ApiError> {
        self.call(
            "data.on_node",
            &OnNode {
                node: node.into(),
                after: after.into(),
                limit,
            },
        )
        .await
    }
    pub async fn repairs(&self, limit: u32) -> Result<Vec<Repair>, ApiError> {
        self.call("repair.list", &Limit { limit }).await
    }
    /// Up to `limit` pending repairs no other gateway is working on, claimed for `lease`.
    pub async fn claim_repairs(
        &self,
        limit: u32,
        lease: std::time::Duration,
    ) -> Result<Vec<Repair>, ApiError> {
        let lease_ms = lease.as_millis() as i64;
        self.call("repair.claim", &Claim { limit, lease_ms }).await
    }
    /// Give a claimed repair back: any gateway may take it again after `retry`.
    pub async fn release_repair(
        &self,
        copy: Copy,
        retry: std::time::Duration,
    ) -> Result<(), ApiError> {
        let retry_ms = retry.as_millis() as i64;
        self.call("repair.release", &Release { copy, retry_ms })
            .await
    }
    pub async fn repaired(&self, lost_on: &str, copy: Copy) -> Result<(), ApiError> {
        self.call(
            "repair.done",
            &Repaired {
                lost_on: lost_on.into(),
                copy,
            },
        )
        .await
    }
    pub async fn create_upload(&self, u: &Upload) -> Result<(), ApiError> {
        self.call("upload.create", u).await
    }
    pub async fn upload(&self, id: &str) -> Result<Option<Upload>, ApiError> {
        self.call("upload.get", &Name { name: id.into() }).await
    }
    pub async fn put_part(&self, p: &PutPart) -> Result<(), ApiError> {
        self.call("upload.put_part", p).await
    }
    pub async fn commit_upload(&self, c: &CommitUpload) -> Result<Entry, ApiError> {
        self.call("upload.commit", c).await
    }
    /// A page of an account's open uploads (without their parts).
    pub async fn uploads(&self, q: &UploadQuery) -> Result<Vec<Upload>, ApiError> {
        self.call("upload.list", q).await
    }
    pub async fn abort_upload(&self, id: &str) -> Result<(), ApiError> {
        self.call("upload.abort", &Name { name: id.into() }).await
    }

    pub async fn job_create(&self, j: &NewJob) -> Result<(), ApiError> {
        self.call("job.create", j).await
    }
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, ApiError> {
        self.call("job.get", &Name { name: id.into() }).await
    }
    /// Job `id`'s row once its version differs from `seen` (or when `timeout` is up); a
    /// running job's progress gathered for up to `settle` first (its end answered at once).
    pub async fn job_wait(
        &self,
        id: &str,
        seen: &str,
        timeout: std::time::Duration,
        settle: std::time::Duration,
    ) -> Result<Option<JobRow>, ApiError> {
        let w = JobWait {
            id: id.into(),
            seen: seen.into(),
            timeout_ms: timeout.as_millis() as u64,
            settle_ms: settle.as_millis() as u64,
        };
        self.call("job.wait", &w).await
    }
    pub async fn jobs_active(&self) -> Result<Vec<String>, ApiError> {
        self.call("job.active", &()).await
    }
    pub async fn job_add_inputs(&self, a: &AddInputs) -> Result<(), ApiError> {
        self.call("job.add_inputs", a).await
    }
    pub async fn job_end(&self, id: &str) -> Result<(), ApiError> {
        self.call("job.end", &Name { name: id.into() }).await
    }
    pub async fn job_cancel(&self, id: &str) -> Result<(), ApiError> {
        self.call("job.cancel", &Name { name: id.into() }).await
    }
    pub async fn job_records(&self, q: &JobRecords) -> Result<Vec<String>, ApiError> {
        self.call("job.records", q).await
    }
    /// Taken whole: in this process the write owns it (no copy of a step's events and objects).
    pub async fn job_log(&self, a: JobAppend) -> Result<(), ApiError> {
        // Every step of every job ends here: in this process, typed.
        if let Some(local) = crate::local::get(&self.base) {
            return local.job_log(a).await;
        }
        self.call("job.log", &a).await
    }
    pub async fn lease(&self, l: &Lease) -> Result<bool, ApiError> {
        self.call("lease.take", l).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_unavailable_and_a_refusal_is_not() {
        let db: ApiError = crate::Error::Database("PostgreSQL: error connecting".into()).into();
        assert!(unavailable(&db), "{db:?}");
        let down = ApiError::new(Code::ServiceUnavailable, "metadata unreachable: refused");
        assert!(unavailable(&down));
        let refused: ApiError = crate::Error::refused(Code::PreconditionFailed, "no").into();
        assert!(!unavailable(&refused));
        assert!(!unavailable(&ApiError::internal("a bug")));
    }
}
