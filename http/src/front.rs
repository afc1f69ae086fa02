//! A small front on every server connection, between the socket and hyper. It owns two things:
//!
//! - **Idle time**: the time of the last byte read or written, so the accept loop can close a
//!   connection that moved nothing for [`Limits::idle`] while no handler runs.
//! - **Errors hyper makes itself**: hyper answers a request it cannot parse (URI too long,
//!   headers too large, bad header bytes, bad or duplicate `Content-Length`, unknown version)
//!   before Mobula sees it, with an empty body. The front recognises exactly that response —
//!   written when no response of ours is in flight ([`Activity::responding`] is zero), the whole
//!   write being hyper's bare head (`HTTP/1.1 400|414|431 …`, `content-length: 0`, `date`, no
//!   other header but `connection: close`) — and sends in its place the same status with the JSON `{code, message}`
//!   body every Mobula error has. hyper closes the connection after it, so nothing follows.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Code, ErrorBody};

/// Time limits of every server connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most time to receive a request's head, counted from when the server starts waiting for
    /// it: it also bounds how long a kept-alive connection may sit between requests.
    pub header_read: Duration,
    /// A connection that moves no byte for this long while no handler is running is closed
    /// (a client that stopped sending a body, or stopped reading a response).
    pub idle: Duration,
    /// The API this listener serves, for its byte counters (`mobula_bytes_*_total{api}`);
    /// `None` counts nothing.
    pub api: Option<&'static str>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            api: None,
        }
    }
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Shared between a connection's front and its service.
#[derive(Debug, Default)]
pub struct Activity {
    last_io: AtomicU64,
    /// Requests whose handler is still running (a running handler is never idle).
    pub handling: AtomicUsize,
    /// Requests handed to the handler whose response body hyper has not dropped yet.
    pub responding: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        let a = Activity::default();
        a.last_io.store(clock(), Ordering::Relaxed);
        Arc::new(a)
    }

    fn touch(&self) {
        self.last_io.store(clock(), Ordering::Relaxed);
    }

    /// Whether nothing moved for `limit` and no handler is running.
    pub fn idle_for(&self, limit: Duration) -> bool {
        self.handling.load(Ordering::Relaxed) == 0
            && clock().saturating_sub(self.last_io.load(Ordering::Relaxed))
                >= limit.as_millis() as u64
    }
}

/// The socket as hyper sees it.
pub struct Front<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Replacement bytes still to write, from this offset.
    pending: Option<(Vec<u8>, usize)>,
    /// Bytes received and sent, when the listener counts them.
    traffic: Option<(metrics::Counter, metrics::Counter)>,
}

impl<S> Front<S> {
    pub fn new(inner: S, activity: Arc<Activity>, api: Option<&'static str>) -> Self {
        Front {
            inner,
            activity,
            pending: None,
            traffic: api.map(crate::telemetry::traffic),
        }
    }
}

/// The JSON response for hyper's own bare error head `head`, if it is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let (status, code, message) = match &rest[..rest.len().min(4)] {
        "400 " => (400, Code::InvalidArgument, "malformed HTTP request"),
        "414 " => (414, Code::UriTooLong, "the request URI is too long"),
        "431 " => (
            431,
            Code::HeadersTooLarge,
            "the request headers are too large",
        ),
        _ => return None,
    };
    let mut lines = text.strip_suffix("\r\n\r\n")?.split("\r\n").skip(1);
    let mut date = None;
    let mut empty = false;
    for l in lines.by_ref() {
        match l.split_once(": ") {
            Some(("content-length", "0")) => empty = true,
            Some(("connection", "close")) => {}
            Some(("date", d)) if d.len() == 29 => date = Some(d),
            _ => return None,
        }
    }
    let date = date.filter(|_| empty)?;
    let body = serde_json::to_vec(&ErrorBody {
        code: code.as_str().into(),
        message: message.into(),
    })
    .ok()?;
    let reason = http::StatusCode::from_u16(status)
        .ok()?
        .canonical_reason()
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {date}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncWrite + Unpin> Front<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, off)) = self.pending.as_mut() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[*off..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *off += n;
            if *off == buf.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn intercept(&mut self, buf: &[u8]) -> bool {
        if self.activity.responding.load(Ordering::Relaxed) != 0 || buf.len() > 160 {
            return false;
        }
        match replacement(buf) {
            Some(r) => {
                self.pending = Some((r, 0));
                true
            }
            None => false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Front<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.touch();
            if let Some((received, _)) = &self.traffic {
                received.increment(n as u64);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Front<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if self.intercept(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        let r = ready!(Pin::new(&mut self.inner).poll_write(cx, buf));
        if let Ok(n @ 1..) = r {
            self.activity.touch();
            if let Some((_, sent)) = &self.traffic {
                sent.increment(n as u64);
            }
        }
        Poll::Ready(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next()) {
            if self.intercept(only) {
                return Poll::Ready(Ok(only.len()));
            }
        }
        let r = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        if let Ok(n @ 1..) = r {
            self.activity.touch();
            if let Some((_, sent)) = &self.traffic {
                sent.increment(n as u64);
            }
        }
        Poll::Ready(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_error_heads_are_replaced() {
        let date = "Tue, 01 Dec 2026 00:00:00 GMT";
        let head = format!("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n");
        let r = String::from_utf8(replacement(head.as_bytes()).unwrap()).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );
        assert!(r.contains("content-type: application/json"), "{r}");
        assert!(
            r.ends_with(
                r#"{"code":"HeadersTooLarge","message":"the request headers are too large"}"#
            ),
            "{r}"
        );
        // Anything else is left alone: our own errors (they have a type and a body), other
        // statuses, extra headers, a body after the head.
        for other in [
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: {date}\r\n\r\n{{}}"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\nx-request-id: 1\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: {date}\r\n\r\nx"),
        ] {
            assert!(replacement(other.as_bytes()).is_none(), "{other}");
        }
    }
}
