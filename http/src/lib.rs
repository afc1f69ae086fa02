//! Shared HTTP plumbing for every Mobula service (metadata, storage node, gateway).
//!
//! Owns three things and nothing else:
//! - [`serve`]: the hyper accept loop over an already-bound listener, with a shutdown future.
//!   Connections are owned by the loop: when the loop future is dropped (a test "kills" a node)
//!   every connection it accepted is dropped with it, like a process exit would do. Every
//!   connection has a header-read timeout and an idle limit ([`Limits`]), and errors hyper
//!   answers by itself get the JSON error body too (`front.rs`).
//! - The bounds of every internal client's connection pool ([`POOL_IDLE_PER_HOST`],
//!   [`POOL_IDLE_TIMEOUT`]).
//! - [`Body`] and constructors for full, empty, JSON and streaming bodies.
//! - [`ErrorBody`], the `{"code","message"}` wire shape of every error in Mobula.

mod error;
mod front;
pub mod reqid;
pub mod telemetry;
pub mod zstd;
pub use error::{ApiError, Code};
pub use front::Limits;

use front::{Activity, Front};

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Boxed error carried by streaming bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body used by every Mobula service.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// Request type every handler receives.
pub type Request = http::Request<Incoming>;

/// The JSON error every Mobula service returns: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body streamed from `stream`; errors abort the response (the connection is reset).
pub fn stream<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

/// Read a whole request body of at most `max` bytes, each piece arriving within `idle`
/// (`UploadTimeout` otherwise; too long a body or a broken one is `InvalidArgument`).
pub async fn collect_body(
    mut body: Incoming,
    max: usize,
    idle: Duration,
) -> Result<Bytes, ApiError> {
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    Code::UploadTimeout,
                    format!("no data received for {idle:?}"),
                ))
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("reading body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > max {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("reading body: longer than {max} bytes"),
                ));
            }
            out.extend_from_slice(&d);
        }
    }
}

/// A JSON response with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("serialising plain data cannot fail");
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            code: code.to_string(),
            message: message.into(),
        },
    )
}

/// A response with only a status.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

/// Serve HTTP/1.1 on `listener` until `shutdown` resolves, then give open connections `grace`
/// to finish. Connections live in a `JoinSet`, so dropping this future drops them all.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_tls(listener, None, handler, shutdown, grace).await
}

/// Idle connections an internal client keeps per host, and how long one may stay idle.
pub const POOL_IDLE_PER_HOST: usize = 32;
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// [`serve`], over TLS when `tls` is given (a failed handshake drops only that connection).
pub async fn serve_tls<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, tls, handler, shutdown, grace, Limits::default()).await
}

/// [`serve_tls`] with explicit connection [`Limits`].
pub async fn serve_with<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let stop = stop_rx.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        None => connection(stream, handler, stop, limits).await,
                        Some(acceptor) => {
                            let accept = acceptor.accept(stream);
                            match tokio::time::timeout(limits.header_read, accept).await {
                                Ok(Ok(s)) => connection(s, handler, stop, limits).await,
                                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
}

/// A response body that tells the connection's [`Activity`] when hyper is done with it.
struct Tracked {
    body: Body,
    activity: Arc<Activity>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts a running handler in [`Activity::handling`] until dropped.
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection<S, H, F>(
    stream: S,
    handler: Arc<H>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Activity::new();
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let activity = act.clone();
        activity.handling.fetch_add(1, Ordering::Relaxed);
        activity.responding.fetch_add(1, Ordering::Relaxed);
        let guard = Handling(activity.clone());
        let expects_continue = req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let fut = handler(req);
        async move {
            let mut resp = fut.await;
            drop(guard);
            // A refusal sent before the body was asked for: the client may never send that body
            // (it waited for `100 Continue`), so the connection cannot be reused — whatever it
            // sends next would be read as the old request's body. Close it after this answer.
            if expects_continue && resp.status().as_u16() >= 300 {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, activity }.boxed_unsync()))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(
            TokioIo::new(Front::new(stream, activity.clone(), limits.api)),
            svc,
        );
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((limits.idle / 4).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = loop {
        tokio::select! {
            _ = conn.as_mut() => break false,
            _ = stop.changed() => break true,
            _ = tick.tick() => {
                if activity.idle_for(limits.idle) {
                    tracing::debug!("closing a connection idle for {:?}", limits.idle);
                    return;
                }
            }
        }
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// A TLS acceptor from PEM files: a certificate chain and its private key (PKCS#8, PKCS#1 or
/// SEC1).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(cert, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
