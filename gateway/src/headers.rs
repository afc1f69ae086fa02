//! HTTP headers in and out: what a PUT stores, what a GET/HEAD returns, conditional requests.

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Entry, Headers, Preconditions};

/// Largest total size of `m-*` user metadata (names and values), in bytes.
pub const MAX_USER_METADATA: usize = 4096;
/// Default number of copies.
pub const DEFAULT_DURABILITY: u8 = 2;

/// Non-`m-*` headers stored with an object and returned on GET/HEAD.
const STORED: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
    "surrogate-key",
];

fn is_stored(name: &str) -> bool {
    name.starts_with("m-") || name.starts_with("access-control-") || STORED.contains(&name)
}

/// The value of `name` as text, if present and valid.
pub fn get(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Content type and stored headers of a PUT (or `?metadata=true` update).
pub fn stored(h: &HeaderMap) -> Result<(String, Headers), ApiError> {
    let content_type = get(h, header::CONTENT_TYPE)
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut out = Headers::new();
    let mut user = 0;
    for (name, value) in h {
        let n = name.as_str();
        if !is_stored(n) {
            continue;
        }
        let v = value
            .to_str()
            .map_err(|_| ApiError::new(Code::InvalidArgument, format!("header {n} is not text")))?;
        if n.starts_with("m-") {
            user += n.len() + v.len();
        }
        out.insert(n.to_string(), v.to_string());
    }
    if user > MAX_USER_METADATA {
        return Err(ApiError::new(
            Code::InvalidArgument,
            format!("m-* headers total {user} bytes, more than {MAX_USER_METADATA}"),
        ));
    }
    Ok((content_type, out))
}

/// The requested number of copies (`durability-level`, 1..=6, default 2).
pub fn durability(h: &HeaderMap) -> Result<u8, ApiError> {
    let v = get(h, "durability-level").or_else(|| get(h, "x-durability-level"));
    match v {
        None => Ok(DEFAULT_DURABILITY),
        Some(s) => match s.trim().parse::<u8>() {
            Ok(d @ 1..=6) => Ok(d),
            _ => Err(ApiError::new(
                Code::InvalidDurabilityLevel,
                format!("durability-level must be 1 to 6, not {s:?}"),
            )),
        },
    }
}

/// The client's `Content-MD5` (base64 of 16 bytes), if given.
pub fn content_md5(h: &HeaderMap) -> Result<Option<String>, ApiError> {
    match get(h, "content-md5") {
        None => Ok(None),
        Some(s) => match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
            Ok(b) if b.len() == 16 => Ok(Some(s.trim().to_string())),
            _ => Err(ApiError::new(
                Code::InvalidArgument,
                "content-md5 must be the base64 of 16 bytes",
            )),
        },
    }
}

fn tags(v: &str) -> Vec<String> {
    v.split(',').map(|t| t.trim().to_string()).collect()
}

/// Write preconditions: `If-Match`, `If-None-Match`, `If-Unmodified-Since`.
pub fn preconditions(h: &HeaderMap) -> Preconditions {
    Preconditions {
        if_match: get(h, header::IF_MATCH).map(tags),
        if_none_match: get(h, header::IF_NONE_MATCH).map(tags),
        if_unmodified_since: get(h, header::IF_UNMODIFIED_SINCE)
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .map(to_ms),
    }
}

/// Whether a precondition header is present at all.
pub fn has_preconditions(h: &HeaderMap) -> bool {
    h.contains_key(header::IF_MATCH)
        || h.contains_key(header::IF_NONE_MATCH)
        || h.contains_key(header::IF_UNMODIFIED_SINCE)
}

fn to_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// RFC 1123 date for `Last-Modified`.
pub fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(from_ms(ms))
}

/// RFC 3339 date for listings.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_ms(ms)).to_string()
}

/// Read-side conditionals: `Some(304)` for `If-None-Match`/`If-Modified-Since` hits,
/// an error for failed `If-Match`/`If-Unmodified-Since`.
pub fn check_read(h: &HeaderMap, e: &Entry) -> Result<bool, ApiError> {
    mobula_metadata::api::check_preconditions(
        Some(e),
        &Preconditions {
            if_match: get(h, header::IF_MATCH).map(tags),
            if_none_match: None,
            if_unmodified_since: get(h, header::IF_UNMODIFIED_SINCE)
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .map(to_ms),
        },
    )?;
    let etag = e.data.as_ref().map(|d| d.id.as_str()).unwrap_or("");
    if let Some(v) = get(h, header::IF_NONE_MATCH) {
        let hit = tags(v)
            .iter()
            .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == etag);
        return Ok(hit);
    }
    if let Some(since) =
        get(h, header::IF_MODIFIED_SINCE).and_then(|d| httpdate::parse_http_date(d).ok())
    {
        return Ok(e.mtime / 1000 <= to_ms(since) / 1000);
    }
    Ok(false)
}

/// Set the headers of an object response (everything but length and range).
pub fn object(h: &mut HeaderMap, e: &Entry) {
    let mut set = |k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    };
    for (k, v) in &e.headers {
        set(k, v);
    }
    if let Some(d) = &e.data {
        set("etag", &d.id);
        set("content-md5", &d.md5);
        set("durability-level", &d.durability.to_string());
    }
    set("last-modified", &http_date(e.mtime));
    set("content-type", &e.content_type);
    set("accept-ranges", "bytes");
}

/// The media type of `Content-Type` and its `type=` parameter (`directory`, `link`).
pub fn special_type(h: &HeaderMap) -> Option<&str> {
    let ct = get(h, header::CONTENT_TYPE)?;
    let mut it = ct.split(';').map(str::trim);
    if !it.next()?.eq_ignore_ascii_case("application/json") {
        return None;
    }
    it.find_map(|p| p.strip_prefix("type="))
        .map(|t| t.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_bounds() {
        let mut h = HeaderMap::new();
        assert_eq!(durability(&h).unwrap(), 2);
        for (v, ok) in [
            ("0", false),
            ("7", false),
            ("abc", false),
            ("1", true),
            ("6", true),
        ] {
            h.insert("durability-level", HeaderValue::from_static(v));
            assert_eq!(durability(&h).is_ok(), ok, "{v}");
        }
    }

    #[test]
    fn user_metadata_limit() {
        let mut h = HeaderMap::new();
        h.insert("m-a", HeaderValue::from_str(&"x".repeat(4000)).unwrap());
        assert!(stored(&h).is_ok());
        h.insert("m-b", HeaderValue::from_str(&"x".repeat(200)).unwrap());
        assert_eq!(stored(&h).unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn directory_and_link_types() {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; type=directory"),
        );
        assert_eq!(special_type(&h), Some("directory"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(special_type(&h), None);
    }
}
