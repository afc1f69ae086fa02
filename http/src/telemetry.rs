//! Metrics of every role, in Prometheus text, and the admin listener that serves them with the
//! role's health.
//!
//! Owns: the process's one metrics recorder ([`install`], idempotent; until it is installed every
//! `metrics::counter!`/`histogram!` in Mobula is a no-op), the names and help texts of Mobula's
//! metrics ([`NAMES`], a stable surface: dashboards and alerts depend on them), the request
//! accounting every listener shares ([`request`]), the process figures (CPU, RSS, open fds) read
//! at each scrape, and [`serve_admin`]: `GET /metrics`, `GET /health/live` (the process
//! answers), `GET /health/ready` and `/health` (every readiness check of the roles it runs
//! passes; 503 with the failing checks otherwise).
//!
//! Invariant: metric names and label keys only change with the snapshot test that guards them
//! (`tests/e2e/metrics.rs`); label values are bounded sets (API, operation, status, node id) —
//! never a path, key, account or request id.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{Body, Request};

/// Every metric Mobula records: name, kind and help text.
pub const NAMES: &[(&str, &str, &str)] = &[
    ("mobula_requests_total", "counter", "Requests answered, by API, operation and status"),
    ("mobula_request_duration_seconds", "histogram", "Time to answer a request (to its head), by API and operation"),
    ("mobula_bytes_received_total", "counter", "Bytes read from clients' connections, by API"),
    ("mobula_bytes_sent_total", "counter", "Bytes written to clients' connections, by API"),
    ("mobula_copies_written_total", "counter", "Copies made durable on a node"),
    ("mobula_copies_verified_total", "counter", "Copies verified in full against their block hashes (scrub)"),
    ("mobula_copies_bad_total", "counter", "Copies found bad (a block failed verification, or missing) and quarantined"),
    ("mobula_copies_repaired_total", "counter", "Copies re-made from a good copy after one was found bad or lost"),
    ("mobula_scrub_files_checked", "gauge", "Files checked by the node's current or last scrub pass"),
    ("mobula_scrub_passes_total", "counter", "Scrub passes completed by the node"),
    ("mobula_scrub_last_pass_timestamp_seconds", "gauge", "When the node's last scrub pass ended (Unix time)"),
    ("mobula_node_free_bytes", "gauge", "Free space of the node's volume"),
    ("mobula_node_copies", "gauge", "Data files (copies) the node holds"),
    ("mobula_tasks_running", "gauge", "Tasks running on the node"),
    ("mobula_tasks_finished_total", "counter", "Tasks finished on the node, by result (done, failed)"),
    ("mobula_tasks_queued", "gauge", "Tasks waiting for a slot (not yet placed on a node), over the jobs this process coordinates"),
    ("mobula_sandbox_setup_seconds", "histogram", "Time to start a task in its container, by container (new, live: a task group's)"),
    ("mobula_metadata_transaction_seconds", "histogram", "Time of one metadata write transaction (a group commit), begin to commit"),
    ("mobula_metadata_transaction_writes", "histogram", "Writes committed together in one metadata transaction"),
    ("process_cpu_seconds_total", "gauge", "CPU time of this process (user and system)"),
    ("process_resident_memory_bytes", "gauge", "Resident memory of this process"),
    ("process_open_fds", "gauge", "Open file descriptors of this process"),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process's recorder (once; later calls return the same handle). A process that
/// installs none records nothing, at the cost of a branch per metric. Install it before any
/// role starts: a metric handle taken before (a node's counters are taken when it starts)
/// stays a no-op.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let seconds = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let writes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_writes".into()), &writes))
            .expect("non-empty buckets");
        let handle = builder
            .install_recorder()
            .expect("the metrics recorder is installed once, here");
        for (name, kind, help) in NAMES {
            match *kind {
                "counter" => metrics::describe_counter!(*name, *help),
                "gauge" => metrics::describe_gauge!(*name, *help),
                _ => metrics::describe_histogram!(*name, *help),
            }
        }
        handle
    })
}

/// Whether metrics are recorded in this process (callers skip work that only feeds them).
pub fn enabled() -> bool {
    HANDLE.get().is_some()
}

/// Count one answered request of `api` (`manta`, `s3`, `metadata`, `node`) and its time.
/// The handles of each (api, op, status) are looked up once and kept: a request costs a map
/// lookup under a read lock, not the facade's key building.
pub fn request(api: &'static str, op: &'static str, status: StatusCode, started: Instant) {
    type Handles = (metrics::Counter, metrics::Histogram);
    type Cache = RwLock<HashMap<(&'static str, &'static str, u16), Handles>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    if HANDLE.get().is_none() {
        return;
    }
    let key = (api, op, status.as_u16());
    let cache = CACHE.get_or_init(Default::default);
    let found = cache
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let (count, time) = found.unwrap_or_else(|| {
        let status = status.as_str().to_string();
        let h = (
            metrics::counter!("mobula_requests_total", "api" => api, "op" => op, "status" => status),
            metrics::histogram!("mobula_request_duration_seconds", "api" => api, "op" => op),
        );
        let mut w = cache.write().unwrap_or_else(|p| p.into_inner());
        w.entry(key).or_insert(h).clone()
    });
    count.increment(1);
    time.record(started.elapsed().as_secs_f64());
}

/// The two byte counters of a listener serving `api` (no-ops until [`install`]).
pub(crate) fn traffic(api: &'static str) -> (metrics::Counter, metrics::Counter) {
    (
        metrics::counter!("mobula_bytes_received_total", "api" => api),
        metrics::counter!("mobula_bytes_sent_total", "api" => api),
    )
}

fn process_figures() {
    use nix::sys::resource::{getrusage, UsageWho};
    if let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        // A gauge: the facade's counters are integers, and CPU time is read, not counted.
        metrics::gauge!("process_cpu_seconds_total")
            .set(secs(u.user_time()) + secs(u.system_time()));
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kb) = rss {
            metrics::gauge!("process_resident_memory_bytes").set(kb * 1024.0);
        }
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(d.count() as f64);
    }
}

/// The Prometheus text of everything recorded (installs the recorder if needed).
pub fn render() -> String {
    let handle = install();
    process_figures();
    handle.run_upkeep();
    handle.render()
}

/// A readiness check: `Err(reason)` while the role cannot serve.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The readiness checks of the roles a process runs, by name.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<(String, Check)>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(n, _)| n).collect();
        f.debug_struct("Health").field("checks", &names).finish()
    }
}

impl Health {
    /// Add the check `name`.
    pub fn check<F, Fut>(&mut self, name: impl Into<String>, f: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let f = Arc::new(f);
        let check: Check = Arc::new(move || {
            let f = f.clone();
            Box::pin(async move { f().await })
        });
        self.checks.push((name.into(), check));
    }

    /// Every check's result (each given 2 s), in order.
    pub async fn run(&self) -> Vec<(String, Result<(), String>)> {
        let all = self.checks.iter().map(|(name, c)| async move {
            let r = tokio::time::timeout(Duration::from_secs(2), c())
                .await
                .unwrap_or_else(|_| Err("no answer within 2 s".into()));
            (name.clone(), r)
        });
        futures::future::join_all(all).await
    }
}

async fn admin(health: Arc<Health>, req: Request) -> http::Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return crate::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadMethod",
            "the admin listener answers GET",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = http::Response::new(crate::full(render()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/health/live" => crate::json(StatusCode::OK, &serde_json::json!({"live": true})),
        "/health" | "/health/ready" => {
            let results = health.run().await;
            let ready = results.iter().all(|(_, r)| r.is_ok());
            let checks: serde_json::Map<String, serde_json::Value> = results
                .into_iter()
                .map(|(n, r)| (n, r.err().map_or("ok".into(), |e| e.into())))
                .collect();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            crate::json(
                status,
                &serde_json::json!({"ready": ready, "checks": checks}),
            )
        }
        p => crate::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "{p}: the admin listener serves /metrics, /health, /health/live, /health/ready"
            ),
        ),
    }
}

/// Serve the admin listener until `shutdown` resolves (installs the recorder).
pub async fn serve_admin(
    listener: TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()>,
) {
    install();
    let health = Arc::new(health);
    let upkeep = async {
        let mut t = tokio::time::interval(Duration::from_secs(5));
        loop {
            t.tick().await;
            install().run_upkeep();
        }
    };
    let server = crate::serve(
        listener,
        move |req| admin(health.clone(), req),
        shutdown,
        Duration::from_secs(1),
    );
    tokio::select! {
        _ = server => {}
        _ = upkeep => {}
    }
}
