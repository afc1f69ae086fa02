//! Request ids across roles: the id a gateway gives a request is carried, in the `x-request-id`
//! header, to every storage node and metadata call made while serving it, and each role serves
//! the call inside a tracing span `request{id=…}` — so every log line any role writes for one
//! client request carries the same id (`--log-format json` puts it in the line's `span`).
//!
//! Invariant: an id taken from a header is at most [`MAX_LEN`] bytes of `[A-Za-z0-9_-]`;
//! anything else is replaced by a new id (log lines never carry a caller's arbitrary bytes).

use std::future::Future;
use std::sync::Arc;

use http::HeaderMap;
use tracing::Instrument;

/// The header carrying the id between roles (and back to the client).
pub const HEADER: &str = "x-request-id";
/// Longest id accepted from a header.
pub const MAX_LEN: usize = 64;

tokio::task_local! {
    static ID: Arc<str>;
}

/// The id of the request being served by this task, if any.
pub fn current() -> Option<Arc<str>> {
    ID.try_with(Arc::clone).ok()
}

/// The id in `headers`, when there is a valid one.
pub fn from_headers(headers: &HeaderMap) -> Option<Arc<str>> {
    let v = headers.get(HEADER)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= MAX_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| Arc::from(v))
}

/// Run `f` as serving request `id`: in its span, with [`current`] answering `id`.
pub async fn scope<F: Future>(id: Arc<str>, f: F) -> F::Output {
    // At ERROR level so that the span is on whenever any logging is: every line carries it.
    let span = tracing::error_span!("request", id = %id);
    ID.scope(id, f.instrument(span)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_taken_from_headers() {
        let mut h = HeaderMap::new();
        assert!(from_headers(&h).is_none());
        h.insert(HEADER, "0f3e-ab_C9".parse().unwrap());
        assert_eq!(from_headers(&h).as_deref(), Some("0f3e-ab_C9"));
        h.insert(HEADER, "a b".parse().unwrap());
        assert!(from_headers(&h).is_none());
        h.insert(HEADER, "x".repeat(MAX_LEN + 1).parse().unwrap());
        assert!(from_headers(&h).is_none());
    }

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert!(current().is_none());
        let got = scope(Arc::from("r1"), async { current() }).await;
        assert_eq!(got.as_deref(), Some("r1"));
        assert!(current().is_none());
    }
}
