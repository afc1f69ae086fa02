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
use tokio::sync::watch;

use crate::db::Db;

/// A service serving in this process.
pub(crate) struct Local {
    pub db: Arc<Db>,
    pub changes: Arc<watch::Sender<u64>>,
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
