//! Mobula's public HTTP gateway: the storage API of SPEC §3.
//!
//! Stateless: everything it knows comes from the metadata service (namespace, node registry)
//! and the storage nodes (bytes). Many gateways may run side by side.
//!
//! A request goes: request id → path parsing ([`path`]) → account check → authentication
//! seam ([`auth`]) → a handler (`write.rs` with the fan-out of `fanout.rs`, `read.rs`, `dirs.rs`,
//! `uploads.rs`, `jobs.rs`). Errors are [`ApiError`]s rendered as `{"code","message"}`; every
//! response carries `x-request-id`.
//!
//! The surface: [`Gateway`] and [`GatewayConfig`], [`run`], the authentication seam ([`auth`]),
//! API paths ([`path`]) and the node registry cache ([`nodes`]); the handlers are private.

pub mod auth;
mod buckets;
pub mod console;
mod dirs;
mod fanout;
mod headers;
mod jobs;
pub mod nodes;
mod ops;
pub mod path;
mod read;
mod reclaim;
mod repair;
pub mod s3;
mod signature;
#[cfg(test)]
mod testing;
mod together;
mod uploads;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code, Request};
use mobula_metadata::MetadataClient;
use mobula_storage_node::{DataNodes, NodeClient};
use tokio::net::TcpListener;

use crate::auth::{authorize, Authenticator, TrustPathAccount};
use crate::nodes::Nodes;
use crate::path::ApiPath;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub metadata_url: String,
    /// A client that sends no body bytes for this long is cut off (`UploadTimeout`).
    pub upload_timeout: Duration,
    /// Largest object accepted.
    pub max_object_size: u64,
    /// Smallest multipart part except the last.
    pub min_part_size: u64,
    /// How often the storage-node registry is reloaded.
    pub nodes_refresh: Duration,
    /// How often unreferenced data is reclaimed from the nodes.
    pub reclaim_every: Duration,
    /// Require signed requests (`true`), or act as the account in the path (`false`: until every
    /// client signs, the default).
    pub require_signatures: bool,
    /// Serve HTTPS with this PEM certificate chain and private key.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Run the jobs coordinator in this gateway (one of several takes the lease).
    pub coordinate: bool,
    /// Storage nodes running in this process: copies they hold are read from their stores
    /// directly, not over loopback HTTP (`mobula up`).
    pub local_nodes: Option<mobula_storage_node::LocalNodes>,
    /// A node silent this long is declared dead and its copies re-made from the others.
    pub dead_after: Duration,
    /// Bytes per second the repair loop re-copies (bad copies, drained and dead nodes).
    pub repair_rate: u64,
}

impl GatewayConfig {
    pub fn new(metadata_url: &str) -> Self {
        GatewayConfig {
            metadata_url: metadata_url.to_string(),
            upload_timeout: Duration::from_secs(60),
            max_object_size: 5 << 40,
            min_part_size: 5 << 20,
            nodes_refresh: Duration::from_millis(500),
            reclaim_every: Duration::from_secs(1),
            require_signatures: false,
            tls: None,
            coordinate: true,
            local_nodes: None,
            dead_after: Duration::from_secs(600),
            repair_rate: 256 << 20,
        }
    }
}

/// Shared state of one gateway.
#[derive(Debug)]
pub struct Gateway {
    pub cfg: GatewayConfig,
    pub meta: MetadataClient,
    pub nodes: Nodes,
    /// The nodes' data path (writes, reads, deletes, concatenation): the real HTTP client, or a
    /// fake in unit tests.
    pub data: Arc<dyn DataNodes>,
    /// The nodes' admin API (scrub, repair fetches).
    pub node_client: NodeClient,
    pub auth: Box<dyn Authenticator>,
    /// The jobs coordinator (runs inside [`run`] unless `cfg.coordinate` is off).
    pub jobs: Arc<mobula_jobs::coordinator::Coordinator>,
    /// The web console's state (`/console/`).
    pub console: console::Console,
    accounts: Mutex<HashMap<String, Instant>>,
}

/// How long a positive account lookup is trusted.
const ACCOUNT_CACHE: Duration = Duration::from_secs(30);

impl Gateway {
    /// A gateway authenticating as `cfg.require_signatures` says.
    pub fn new(cfg: GatewayConfig) -> Arc<Gateway> {
        let auth: Box<dyn Authenticator> = if cfg.require_signatures {
            Box::new(auth::SignatureAuth::new(MetadataClient::new(
                &cfg.metadata_url,
            )))
        } else {
            Box::new(TrustPathAccount)
        };
        Self::with_auth(cfg, auth)
    }

    pub fn with_auth(cfg: GatewayConfig, auth: Box<dyn Authenticator>) -> Arc<Gateway> {
        let data: Arc<dyn DataNodes> = match &cfg.local_nodes {
            Some(l) => Arc::new(mobula_storage_node::LocalFirst::new(l.clone())),
            None => Arc::new(NodeClient::new()),
        };
        Self::with_data(cfg, auth, data)
    }

    /// A gateway whose data path to the nodes is `data` (a fake one in unit tests).
    pub fn with_data(
        cfg: GatewayConfig,
        auth: Box<dyn Authenticator>,
        data: Arc<dyn DataNodes>,
    ) -> Arc<Gateway> {
        let meta = MetadataClient::new(&cfg.metadata_url);
        Arc::new(Gateway {
            nodes: Nodes::new(meta.clone()),
            console: console::Console::new(meta.clone()),
            meta,
            data,
            node_client: NodeClient::new(),
            jobs: mobula_jobs::coordinator::Coordinator::new(
                &cfg.metadata_url,
                cfg.local_nodes.clone(),
            ),
            auth,
            cfg,
            accounts: Mutex::new(HashMap::new()),
        })
    }

    async fn check_account(&self, name: &str) -> Result<(), ApiError> {
        {
            let c = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            if c.get(name).is_some_and(|t| t.elapsed() < ACCOUNT_CACHE) {
                return Ok(());
            }
        }
        if self.meta.account_exists(name).await? {
            self.accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), Instant::now());
            Ok(())
        } else {
            Err(ApiError::new(
                Code::AccountDoesNotExist,
                format!("account {name} does not exist"),
            ))
        }
    }
}

/// Serve the gateway on `listener` until `shutdown` resolves; runs the node-registry refresh
/// and the reclaimer alongside.
pub async fn run(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let _ = gw.nodes.refresh().await;
    let g1 = gw.clone();
    let g2 = gw.clone();
    let refresh = async move { g1.nodes.refresh_loop(g1.cfg.nodes_refresh).await };
    let g3 = gw.clone();
    let reclaim = async move { reclaim::run(&g2).await };
    let repair = async move { repair::run(&g3).await };
    let owner = match listener.local_addr() {
        Ok(a) => format!("gateway {a}"),
        Err(_) => uuid::Uuid::new_v4().to_string(),
    };
    let coordinate = gw.cfg.coordinate;
    let coordinator = gw.jobs.clone().run(owner);
    let coordinator = async move {
        if coordinate {
            coordinator.await
        } else {
            std::future::pending().await
        }
    };
    let g = gw.clone();
    let tls = match &gw.cfg.tls {
        Some((cert, key)) => match mobula_http::tls_acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("gateway TLS: {e}");
                return;
            }
        },
        None => None,
    };
    let limits = mobula_http::Limits {
        api: Some("manta"),
        ..Default::default()
    };
    let server = mobula_http::serve_with(
        listener,
        tls,
        move |req| handle(g.clone(), req),
        shutdown,
        Duration::from_secs(10),
        limits,
    );
    let sample = console::sample_loop(gw.clone());
    tokio::select! {
        _ = server => {}
        _ = sample => {}
        _ = refresh => {}
        _ = reclaim => {}
        _ = repair => {}
        _ = coordinator => {}
    }
}

/// Handle one request: route it, render errors, stamp `x-request-id`, count it. Everything
/// it does — log lines, and calls to nodes and metadata — carries its request id.
pub async fn handle(gw: Arc<Gateway>, req: Request) -> Response<Body> {
    let started = std::time::Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let counted = mobula_http::telemetry::enabled().then(|| ops::put_kind(req.headers()));
    let rid: Arc<str> = Arc::from(request_id.as_str());
    let serve = async {
        // Boxed: the routes' futures are large, and hyper moves the one it is handed.
        let resp = match Box::pin(route(&gw, req)).await {
            Ok(r) => r,
            Err(e) => {
                if e.code == Code::InternalError {
                    tracing::error!("{method} {uri}: {e}");
                } else {
                    tracing::debug!("{method} {uri}: {e}");
                }
                let head = method == Method::HEAD;
                let mut r = e.into_response();
                if head {
                    *r.body_mut() = mobula_http::empty();
                }
                r
            }
        };
        tracing::debug!("{method} {uri}: {}", resp.status());
        resp
    };
    let mut resp = mobula_http::reqid::scope(rid, serve).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(put) = counted {
        let (api, op) = if uri.path() == "/ping" {
            ("manta", "Ping")
        } else if console::is_console(uri.path()) {
            ("console", "Console")
        } else {
            let path = ApiPath::parse(uri.path()).ok();
            let ct = resp.headers().get(http::header::CONTENT_TYPE);
            let ct = ct.and_then(|v| v.to_str().ok());
            ops::classify(&method, path.as_ref(), put, ct)
        };
        mobula_http::telemetry::request(api, op, resp.status(), started);
    }
    resp
}

/// Query parameters, decoded.
pub fn query(req: &http::request::Parts) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(q) = req.uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .to_string()
            };
            out.insert(dec(k), dec(v));
        }
    }
    out
}

async fn route(gw: &Arc<Gateway>, req: Request) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    if console::is_console(parts.uri.path()) {
        return Ok(console::route(gw, parts, body).await);
    }
    if parts.uri.path() == "/ping" && (parts.method == Method::GET || parts.method == Method::HEAD)
    {
        return Ok(mobula_http::status(StatusCode::OK));
    }
    let path = ApiPath::parse(parts.uri.path())?;
    gw.check_account(path.account()).await?;
    let caller = gw.auth.authenticate(&parts, &path).await?;
    authorize(&caller, &parts.method, &path)?;
    dispatch(gw, parts, body, path).await
}

async fn dispatch(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    body: Incoming,
    path: ApiPath,
) -> Result<Response<Body>, ApiError> {
    let m = parts.method.clone();
    if path.depth() == 1 {
        return match m {
            Method::GET | Method::HEAD => dirs::get_or_head(gw, &parts, &path.full()).await,
            _ => Err(ApiError::new(
                Code::OperationNotAllowedOnRootDirectory,
                format!("{} only answers GET and HEAD", path.full()),
            )),
        };
    }
    let area = path.area().unwrap_or_default().to_string();
    if !mobula_metadata::api::AREAS.contains(&area.as_str()) {
        return Err(ApiError::new(
            Code::ResourceNotFound,
            format!(
                "{} is not an area of the account (stor, public, jobs, uploads, buckets)",
                path.full()
            ),
        ));
    }
    if area == "buckets" {
        return buckets::route(gw, parts, body, &path).await;
    }
    if jobs::is_api(&m, &path) {
        return jobs::route(gw, parts, body, &path).await;
    }
    if area == "uploads" && (path.depth() > 2 || m == Method::POST) {
        return uploads::route(gw, parts, body, &path).await;
    }
    if path.depth() == 2 && m != Method::GET && m != Method::HEAD && m != Method::PUT {
        return Err(ApiError::new(
            Code::OperationNotAllowedOnDirectory,
            format!("{} is a top-level directory", path.full()),
        ));
    }
    match m {
        Method::GET | Method::HEAD => read::get_or_head(gw, &parts, &path).await,
        Method::PUT => {
            let q = query(&parts);
            match headers::special_type(&parts.headers) {
                Some("directory") => dirs::mkdir(gw, &path).await,
                Some("link") => write::put_link(gw, &parts, &path).await,
                _ if q.get("metadata").map(String::as_str) == Some("true") => {
                    write::update_metadata(gw, &parts, &path).await
                }
                _ if path.depth() == 2 => Err(ApiError::new(
                    Code::OperationNotAllowedOnDirectory,
                    format!("{} is a top-level directory", path.full()),
                )),
                _ => write::put(gw, parts, body, &path).await,
            }
        }
        Method::DELETE => write::delete(gw, &parts, &path).await,
        Method::OPTIONS => Ok(mobula_http::status(StatusCode::OK)),
        _ => Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{m} is not allowed on {}", path.full()),
        )),
    }
}
