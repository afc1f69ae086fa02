//! Request paths: decoding and validation (SPEC §2).
//!
//! The raw path is split on `/` first and each component percent-decoded exactly once, so an
//! encoded `/` (`%2F`) can never create a new component. A component is 1..=255 bytes of UTF-8,
//! not `.` or `..`, without NUL, `/` or `\`; a whole path is at most 1024 bytes. Paths name
//! metadata rows only: no path ever becomes a file-system path.

use mobula_http::{ApiError, Code};

/// Longest path, in bytes.
pub const MAX_PATH: usize = 1024;
/// Longest component, in bytes.
pub const MAX_COMPONENT: usize = 255;

/// A validated object-store path: `/:account/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath {
    /// Decoded components; `[0]` is the account.
    pub parts: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidResource, msg)
}

fn valid_account(a: &str) -> bool {
    let b = a.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

impl ApiPath {
    /// Parse a raw (still percent-encoded) request path.
    pub fn parse(raw: &str) -> Result<ApiPath, ApiError> {
        let rest = raw
            .strip_prefix('/')
            .ok_or_else(|| invalid("path must start with /"))?;
        if let Some(p) = Self::parse_bucket_object(rest)? {
            return Ok(p);
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err(invalid("path must name an account"));
        }
        let mut parts = Vec::new();
        let mut total = 0;
        for comp in rest.split('/') {
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(comp).collect();
            let s = String::from_utf8(bytes).map_err(|_| invalid("path is not valid UTF-8"))?;
            if s.is_empty() {
                return Err(invalid("empty path component"));
            }
            if s == "." || s == ".." {
                return Err(invalid("path components . and .. are not allowed"));
            }
            if s.contains(['/', '\\', '\0']) {
                return Err(invalid("path component contains /, \\ or NUL"));
            }
            if s.len() > MAX_COMPONENT {
                return Err(invalid(format!(
                    "path component longer than {MAX_COMPONENT} bytes"
                )));
            }
            total += s.len() + 1;
            parts.push(s);
        }
        if total > MAX_PATH {
            return Err(invalid(format!("path longer than {MAX_PATH} bytes")));
        }
        if !valid_account(&parts[0]) {
            return Err(invalid(format!("{} is not a valid account name", parts[0])));
        }
        Ok(ApiPath { parts })
    }

    /// `:account/buckets/:bucket/objects/:key`: the key is everything after `objects/`,
    /// percent-decoded once as a whole (it may hold `/`, `//`, `.` or `..`: a key is opaque,
    /// never a file-system path); 1..=1024 bytes of UTF-8 without NUL.
    fn parse_bucket_object(rest: &str) -> Result<Option<ApiPath>, ApiError> {
        let mut it = rest.splitn(5, '/');
        let head: Vec<&str> = it.by_ref().take(4).collect();
        let key = it.next();
        let (Some(raw_key), [account, "buckets", bucket, "objects"]) = (key, head.as_slice())
        else {
            return Ok(None);
        };
        if raw_key.is_empty() {
            return Ok(None);
        }
        let mut p = ApiPath::parse(&format!("/{account}/buckets/{bucket}"))?;
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw_key).collect();
        let key = String::from_utf8(bytes).map_err(|_| invalid("key is not valid UTF-8"))?;
        if !mobula_metadata::api::valid_key(&key) {
            return Err(ApiError::new(
                Code::KeyTooLong,
                format!(
                    "a key is 1 to {} bytes without NUL",
                    mobula_metadata::api::MAX_KEY
                ),
            ));
        }
        p.parts.push("objects".into());
        p.parts.push(key);
        Ok(Some(p))
    }

    /// The key of a bucket object path.
    pub fn bucket_key(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [_, b, _, o, key] if b == "buckets" && o == "objects" => Some(key),
            _ => None,
        }
    }

    /// The account the path belongs to.
    pub fn account(&self) -> &str {
        &self.parts[0]
    }

    /// The top-level area (`stor`, `public`, `jobs`, `uploads`), if any.
    pub fn area(&self) -> Option<&str> {
        self.parts.get(1).map(String::as_str)
    }

    /// Number of components (1 = account root, 2 = an area).
    pub fn depth(&self) -> usize {
        self.parts.len()
    }

    /// The decoded path, `/a/b/c`.
    pub fn full(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.parts.last().expect("a path has at least an account")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_rejects_traversal() {
        let p = ApiPath::parse("/admin/stor/a%20b/c%2525").unwrap();
        assert_eq!(p.full(), "/admin/stor/a b/c%25");
        assert_eq!(p.account(), "admin");
        for bad in [
            "/admin/stor/..",
            "/admin/stor/%2e%2e",
            "/admin/stor/%2E%2E/x",
            "/admin/stor/.",
            "/admin/stor/a%2Fb",
            "/admin/stor/a%00b",
            "/admin/stor/a\\b",
            "/admin/stor/a%5Cb",
            "/admin//stor",
            "/Admin/stor",
            "/admin/stor/%ff",
            "admin/stor",
            "/",
        ] {
            assert_eq!(
                ApiPath::parse(bad).unwrap_err().code,
                Code::InvalidResource,
                "{bad}"
            );
        }
    }

    #[test]
    fn bucket_keys_are_opaque() {
        let p = ApiPath::parse("/admin/buckets/bk/objects/a//b/../c%2Fd/").unwrap();
        assert_eq!(p.bucket_key(), Some("a//b/../c/d/"));
        assert_eq!(p.full(), "/admin/buckets/bk/objects/a//b/../c/d/");
        let long = "k".repeat(1024);
        assert!(ApiPath::parse(&format!("/admin/buckets/bk/objects/{long}")).is_ok());
        let err = ApiPath::parse(&format!("/admin/buckets/bk/objects/{long}k")).unwrap_err();
        assert_eq!(err.code, Code::KeyTooLong);
        assert!(ApiPath::parse("/admin/buckets/bk/objects/a%00").is_err());
        assert!(ApiPath::parse("/admin/buckets/bk/objects/%ff").is_err());
        // The bucket part is still checked as any path.
        assert!(ApiPath::parse("/admin/buckets/../objects/k").is_err());
        assert_eq!(
            ApiPath::parse("/admin/buckets/bk/objects/")
                .unwrap()
                .depth(),
            4
        );
        assert_eq!(
            ApiPath::parse("/admin/stor/x/objects/k")
                .unwrap()
                .bucket_key(),
            None
        );
    }

    #[test]
    fn length_limits() {
        let long = "x".repeat(256);
        assert!(ApiPath::parse(&format!("/admin/stor/{long}")).is_err());
        let ok = "x".repeat(255);
        assert!(ApiPath::parse(&format!("/admin/stor/{ok}")).is_ok());
        let deep = format!("/admin/stor{}", "/abcdefghi".repeat(102));
        assert!(ApiPath::parse(&deep).is_err());
    }
}
