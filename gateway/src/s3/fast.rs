//! The GET fast path: a GetObject of a whole object or one byte range, path style, signed with
//! SigV4 (header or presigned URL), answered without s3s — the one operation where s3s's fixed cost per request
//! (~11–14 µs of CPU: query-string parsing, signing-key derivation, DTO round trips; measured by
//! `cargo bench --bench s3_floor`) is a visible share of the work. See ARCHITECTURE.md, "The S3
//! GET fast path".
//!
//! Invariants:
//! - It only ever *answers successes* of requests it fully understands. Every header must be on
//!   a short list (no conditions, no SSE-C, no tokens), the query holds only the
//!   presigned-URL parameters, and the signature must verify with the key's secret over a
//!   canonical request built here from the request's own bytes ([`super::sigv4`]). Anything
//!   else — an unknown header, a wrong signature, a missing key, bucket or object, a read that
//!   fails before the first byte — returns `None`, and the caller hands the untouched request to
//!   s3s, which answers it exactly as before (errors included).
//! - The response is the one s3s would send for the same request: the same headers with the same
//!   values (`tests/e2e/s3_fast.rs` compares the two byte for byte).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response};
use mobula_http::{Body, Request};
use percent_encoding::percent_decode_str;
use s3s::dto::{ChecksumMode, TimestampFormat};

use super::convert::{self, etag, object_path};
use super::sigv4::{self, Claim, SigningKeys};
use super::Mobula;

/// Request headers the fast path understands (all others send the request to s3s).
const KNOWN: [&str; 14] = [
    "host",
    "range",
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-checksum-mode",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-user-agent",
];

/// The query parameters of a presigned URL (any other sends the request to s3s).
const PRESIGN: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// The fast path's state: cached signing keys, and how many GETs it answered.
#[derive(Debug, Default)]
pub struct Fast {
    keys: SigningKeys,
    /// GETs answered here (the listener's owner may read it: tests, the benchmark).
    served: Arc<AtomicU64>,
}

impl Fast {
    /// A fast path counting the GETs it answers in `served`.
    pub fn new(served: Arc<AtomicU64>) -> Fast {
        Fast {
            keys: SigningKeys::default(),
            served,
        }
    }
}

/// Whether the headers are all known, and bodiless, and ask nothing but what is served here.
fn plain_headers(h: &http::HeaderMap) -> bool {
    h.iter().all(|(n, v)| {
        KNOWN.contains(&n.as_str())
            && match n.as_str() {
                "content-length" => v == "0",
                "x-amz-checksum-mode" => v == ChecksumMode::ENABLED,
                _ => true,
            }
    })
}

/// The presigned-URL parameters of `q`, decoded; `None` for anything else (a `+`, a repeated or
/// unknown name, bad encoding).
fn presign_query(q: &str) -> Option<Vec<(String, String)>> {
    if q.contains('+') {
        return None;
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(PRESIGN.len());
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=')?;
        let k = percent_decode_str(k).decode_utf8().ok()?.into_owned();
        let v = percent_decode_str(v).decode_utf8().ok()?.into_owned();
        if !PRESIGN.contains(&k.as_str()) || out.iter().any(|(n, _)| *n == k) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

/// A path-style object URL's path, decoded, and where its bucket name ends (`/bucket/key`:
/// the bucket is `[1..end]`, the key `[end + 1..]`).
fn object_of(path: &str) -> Option<(String, usize)> {
    if path.contains("%2F") || path.contains("%2f") {
        return None; // an encoded slash: left to s3s's rules
    }
    let p = percent_decode_str(path).decode_utf8().ok()?.into_owned();
    let end = 1 + p.strip_prefix('/')?.find('/')?;
    let ok = mobula_metadata::api::valid_bucket_name(&p[1..end]) && end + 1 < p.len();
    ok.then_some((p, end))
}

/// The account whose key signed `req`, when the signature verifies here.
async fn signer(m: &Mobula, req: &Request, decoded_path: &str) -> Option<String> {
    let h = req.headers();
    let query = match req.uri().query() {
        None | Some("") => Vec::new(),
        Some(q) if !h.contains_key(header::AUTHORIZATION) => presign_query(q)?,
        Some(_) => return None,
    };
    let (claim, expires): (Claim<'_>, Option<i64>) = if query.is_empty() {
        (sigv4::from_headers(h)?, None)
    } else {
        let (c, e) = sigv4::from_query(&query)?;
        (c, Some(e))
    };
    if !sigv4::in_time(claim.amz_date, expires, sigv4::now()) {
        return None;
    }
    let key = m.keys.get(claim.access_key).await.ok()?;
    let canonical = sigv4::canonical_request(decoded_path, &query, h, &claim)?;
    m.fast
        .keys
        .verify(&claim, &key.secret, &canonical)
        .then_some(key.account)
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Bytes `start..end` a request asks for: all of a `size`-byte object, or the one range of its
/// `Range` header, parsed and checked by s3s's own rules; `None` when it has several or one
/// that s3s would refuse (s3s answers those).
fn wanted(h: &http::HeaderMap, size: u64) -> Option<(u64, u64, bool)> {
    let mut all = h.get_all(header::RANGE).iter();
    let Some(v) = all.next() else {
        return Some((0, size, false));
    };
    all.next().is_none().then_some(())?;
    let r = s3s::dto::Range::parse(v.to_str().ok()?).ok()?;
    let r = r.check(size).ok()?;
    Some((r.start, r.end, true))
}

/// The response headers s3s writes for a GetObjectOutput of `e` (bytes `start..end` of `size`,
/// a range when `range`).
fn object_headers(
    e: &mobula_metadata::api::Entry,
    (start, end, range): (u64, u64, bool),
    size: u64,
    checksums: bool,
) -> Option<http::HeaderMap> {
    let mut h = http::HeaderMap::with_capacity(8);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (name, stored) in [
        (header::CACHE_CONTROL, "cache-control"),
        (header::CONTENT_DISPOSITION, "content-disposition"),
        (header::CONTENT_ENCODING, "content-encoding"),
        (header::CONTENT_LANGUAGE, "content-language"),
    ] {
        if let Some(v) = e.headers.get(stored) {
            h.insert(name, value(v)?);
        }
    }
    for (n, v) in super::object::stored_checksums(e, checksums, !range) {
        h.insert(HeaderName::from_static(n), value(v)?);
    }
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    if range {
        let v = format!("bytes {start}-{}/{size}", end.max(1) - 1);
        h.insert(header::CONTENT_RANGE, value(&v)?);
    }
    h.insert(header::CONTENT_TYPE, value(&e.content_type)?);
    h.insert(header::ETAG, etag(e).to_http_header().ok()?);
    if let Some(t) = convert::expires_of(e) {
        let mut out = Vec::with_capacity(29);
        t.format(TimestampFormat::HttpDate, &mut out).ok()?;
        h.insert(header::EXPIRES, HeaderValue::from_bytes(&out).ok()?);
    }
    // s3s's RFC 1123 form is the IMF-fixdate `httpdate` writes (the e2e comparison holds it).
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.mtime.max(0) as u64);
    h.insert(
        header::LAST_MODIFIED,
        value(&httpdate::fmt_http_date(mtime))?,
    );
    for (k, v) in e.headers.iter() {
        if let Some(name) = k.strip_prefix("m-") {
            // s3s writes a value outside printable ASCII RFC 2047-encoded: left to it.
            if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return None;
            }
            let n = HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()).ok()?;
            h.insert(n, value(v)?);
        }
    }
    Some(h)
}

/// Answer `req` here when it is a GetObject this path serves (see the module's invariants);
/// `None` hands it to s3s.
pub async fn get(m: &Mobula, req: &Request) -> Option<Response<Body>> {
    if req.method() != Method::GET || !plain_headers(req.headers()) {
        return None;
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    if m.domains.split(host).is_some() {
        return None; // virtual-host style
    }
    let (path, end) = object_of(req.uri().path())?;
    let account = signer(m, req, &path).await?;
    let (bucket, key) = (&path[1..end], &path[end + 1..]);
    let e =
        m.gw.meta
            .get(&object_path(&account, bucket, key).ok()?)
            .await
            .ok()??;
    let data = e.data.clone()?;
    let checksums = req.headers().contains_key("x-amz-checksum-mode");
    let want = wanted(req.headers(), data.size)?;
    let headers = object_headers(&e, want, data.size, checksums)?;
    let (start, end, range) = want;
    let body = if end == start {
        mobula_http::empty()
    } else {
        let s = crate::read::data_stream(&m.gw, &data, start, end - 1)
            .await
            .ok()?;
        mobula_http::stream(s)
    };
    let mut r = Response::new(body);
    *r.headers_mut() = headers;
    if range {
        *r.status_mut() = http::StatusCode::PARTIAL_CONTENT;
    }
    m.fast.served.fetch_add(1, Ordering::Relaxed);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_requests_are_taken() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    value(v).unwrap(),
                );
            }
            m
        };
        let boto3 = [
            ("host", "127.0.0.1:9000"),
            ("user-agent", "Boto3/1.43"),
            ("accept-encoding", "identity"),
            ("x-amz-date", "20261206T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-checksum-mode", "ENABLED"),
            ("authorization", "AWS4-HMAC-SHA256 …"),
            ("amz-sdk-invocation-id", "x"),
            ("amz-sdk-request", "attempt=1"),
        ];
        assert!(plain_headers(&h(&boto3)));
        for extra in [
            ("if-none-match", "*"),
            ("if-match", "\"x\""),
            ("if-modified-since", "Sun, 06 Dec 2026 00:00:00 GMT"),
            ("x-amz-security-token", "t"),
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            ("x-amz-expected-bucket-owner", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("x-amz-checksum-mode", "DISABLED"),
        ] {
            let mut all = boto3.to_vec();
            all.retain(|(k, _)| *k != extra.0);
            all.push(extra);
            assert!(!plain_headers(&h(&all)), "{extra:?}");
        }
    }

    #[test]
    fn ranges_are_s3s_own() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.append(header::RANGE, value(v).unwrap());
            m
        };
        assert_eq!(wanted(&http::HeaderMap::new(), 10), Some((0, 10, false)));
        assert_eq!(wanted(&h("bytes=2-4"), 10), Some((2, 5, true)));
        assert_eq!(wanted(&h("bytes=2-"), 10), Some((2, 10, true)));
        assert_eq!(wanted(&h("bytes=-3"), 10), Some((7, 10, true)));
        assert_eq!(wanted(&h("bytes=5-100"), 10), Some((5, 10, true)));
        for bad in [
            "bytes=10-",
            "bytes=4-2",
            "bytes=-0",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x",
        ] {
            assert_eq!(wanted(&h(bad), 10), None, "{bad}");
        }
        assert_eq!(wanted(&h("bytes=0-0"), 0), None);
        let mut two = h("bytes=0-1");
        two.append(header::RANGE, value("bytes=2-3").unwrap());
        assert_eq!(wanted(&two, 10), None);
    }

    #[test]
    fn only_presigned_parameters_and_path_style_objects() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261206T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        let p = presign_query(q).unwrap();
        assert_eq!(p[1].1, "AK/20261206/us-east-1/s3/aws4_request");
        for bad in [
            format!("{q}&versionId=1"),
            format!("{q}&partNumber=1"),
            format!("{q}&response-content-type=a"),
            format!("{q}&X-Amz-Security-Token=t"),
            format!("{q}&X-Amz-Date=20261206T000000Z"),
            q.replace("AK%2F", "A+K%2F"),
            "uploads".into(),
        ] {
            assert!(presign_query(&bad).is_none(), "{bad}");
        }
        assert_eq!(object_of("/bkt/a%20b/c").unwrap(), ("/bkt/a b/c".into(), 4));
        for bad in [
            "/bkt", "/bkt/", "/", "/Bkt/k", "/b/k", "/bkt%2Fk", "/bkt/%FF",
        ] {
            assert!(object_of(bad).is_none(), "{bad}");
        }
    }
}
