//! In-process calls: a metadata service running in this process (`mobula up`, tests) answers
//! this process's clients without the loopback HTTP hop — the same methods, arguments and
//! answers (JSON), only no socket, HTTP framing or connection pool in between.
//!
//! A service is registered under its URL while it serves ([`register`]'s guard is dropped when
//! it stops); a client looks its URL up on every call, so a stopped service is unreachable to
//! it exactly as over HTTP (the call falls back to HTTP and finds no one listening).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

use mobula_http::{ApiError, Code};

use crate::api::{Entry, JobAppend, PutObject};
use crate::db::Db;
use crate::error::Error;

/// A service serving in this process.
pub(crate) struct Local {
    pub db: Arc<Db>,
    pub(crate) changes: Arc<crate::job_watch::JobWatch>,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<Local>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<Local>>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

/// Keeps a service registered; dropping it unregisters.
pub(crate) struct Registered(String, Arc<Local>);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        if r.get(&self.0)
            .is_some_and(|w| w.ptr_eq(&Arc::downgrade(&self.1)))
        {
            r.remove(&self.0);
        }
    }
}

/// Register `local` as the service at `url` until the guard is dropped.
pub(crate) fn register(url: &str, local: Arc<Local>) -> Registered {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.insert(url.to_string(), Arc::downgrade(&local));
    Registered(url.to_string(), local)
}

/// The service at `url`, if it serves in this process.
pub(crate) fn get(url: &str) -> Option<Arc<Local>> {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.get(url)?.upgrade()
}

impl Local {
    /// `entry.get` of `path` answered in place, as the service would answer it, when a reader
    /// is idle (see [`Db::read_now`]); `None`: make the call.
    pub fn get_now(&self, path: &str) -> Option<Result<Option<Entry>, ApiError>> {
        let started = std::time::Instant::now();
        let r = self.db.entry_now(path)?;
        Some(answered("entry.get", started, r))
    }

    /// `entry.put_object`, typed: the same grouped commit as the call, without its JSON.
    pub async fn put_object(&self, req: &PutObject) -> Result<Entry, ApiError> {
        let started = std::time::Instant::now();
        let r = self.db.put_object(req).await;
        answered("entry.put_object", started, r)
    }

    /// `job.log`, typed: the same grouped write and wake-ups as the call, without its JSON
    /// (the coordinator logs every step of every job through it).
    pub async fn job_log(&self, a: JobAppend) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let r = crate::server::job_log(&self.db, &self.changes, a).await;
        answered("job.log", started, r)
    }

    /// Call `method` with JSON `body`: the answer's status and JSON body.
    pub async fn call(&self, method: &str, body: Bytes) -> (StatusCode, Bytes) {
        let started = std::time::Instant::now();
        let r = crate::server::dispatch(self.db.clone(), self.changes.clone(), method, body).await;
        let resp = crate::server::answer(r);
        let status = resp.status();
        let op = crate::server::method_name(method);
        mobula_http::telemetry::request("metadata", op, status, started);
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        (status, bytes)
    }
}

/// A typed answer as the service gives it: its error at the edge (an internal one logged),
/// the request counted.
fn answered<T>(
    op: &'static str,
    started: std::time::Instant,
    r: Result<T, Error>,
) -> Result<T, ApiError> {
    let r = r.map_err(|e| {
        let e = ApiError::from(e);
        if e.code == Code::InternalError {
            tracing::error!("metadata: {e}");
        }
        e
    });
    let status = match &r {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    mobula_http::telemetry::request("metadata", op, status, started);
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::api::{Data, PutObject};
    use crate::{Db, MetadataClient};

    /// `entry.get` answered in place, typed, is what the service answers over HTTP.
    #[tokio::test]
    async fn a_get_in_place_answers_as_the_service_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(crate::serve(l, db, std::future::pending()));
        let m = MetadataClient::new(&url);
        m.ping().await.unwrap();
        m.create_account("a").await.unwrap();
        let mut headers = BTreeMap::new();
        headers.insert("m-colour".to_string(), "blue ü".to_string());
        let put = PutObject {
            parents: true,
            path: "/a/stor/d/o".into(),
            data: Data {
                id: format!("{:032x}", 7),
                size: 10,
                md5: "bWQ1".into(),
                blake3: "ab".into(),
                durability: 2,
                nodes: vec!["n1".into(), "n2".into()],
            },
            content_type: "text/plain".into(),
            headers,
            preconditions: Default::default(),
        };
        m.put_object(&put).await.unwrap();
        let local = super::get(&url).expect("the service is registered in this process");
        let http = reqwest::Client::new();
        for path in [
            "/a/stor/d/o",
            "/a/stor/d",
            "/a/stor/missing",
            "/nobody/stor/x",
        ] {
            let typed = local.get_now(path).expect("a reader is idle").unwrap();
            let wire: Option<crate::api::Entry> = http
                .post(format!("{url}/rpc/entry.get"))
                .json(&serde_json::json!({ "name": path }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(typed, wire, "{path}");
            assert_eq!(m.get(path).await.unwrap(), wire, "{path}");
        }
        // A typed write is the call's write: the entry it answers is the one read back, and
        // its refusal is the one the wire gives.
        let mut again = put.clone();
        again.data.id = format!("{:032x}", 8);
        let written = m.put_object(&again).await.unwrap();
        assert_eq!(m.get("/a/stor/d/o").await.unwrap(), Some(written));
        let mut orphan = put.clone();
        orphan.parents = false;
        orphan.path = "/a/stor/nodir/o".into();
        let typed = m.put_object(&orphan).await.unwrap_err();
        let resp = http
            .post(format!("{url}/rpc/entry.put_object"))
            .json(&orphan)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let wire = mobula_http::ApiError::from_wire(status, &resp.bytes().await.unwrap());
        assert_eq!((typed.code, &typed.message), (wire.code, &wire.message));
        assert_eq!(typed.status(), status);
    }
}
