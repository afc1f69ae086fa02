//! The authentication seam: who is making a request, and whether they may do it.
//!
//! An [`Authenticator`] turns a request into a [`Caller`]; [`authorize`] decides. Until
//! signature checking lands (its own issue), [`TrustPathAccount`] makes every request act as
//! the account named in its path.

use futures::future::BoxFuture;
use http::Method;
use mobula_http::{ApiError, Code};

use crate::path::ApiPath;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated account; `None` for an anonymous request.
    pub account: Option<String>,
}

/// Authenticates requests.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Who sent a request with these `parts` for `path`.
    fn authenticate<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        path: &'a ApiPath,
    ) -> BoxFuture<'a, Result<Caller, ApiError>>;
}

/// Pre-authentication behaviour: the caller is the account in the path.
#[derive(Debug, Default)]
pub struct TrustPathAccount;

impl Authenticator for TrustPathAccount {
    fn authenticate<'a>(
        &'a self,
        _parts: &'a http::request::Parts,
        path: &'a ApiPath,
    ) -> BoxFuture<'a, Result<Caller, ApiError>> {
        Box::pin(async move {
            Ok(Caller {
                account: Some(path.account().to_string()),
            })
        })
    }
}

/// May `caller` do `method` on `path`? Owners may do anything; anyone may read `/public`.
pub fn authorize(caller: &Caller, method: &Method, path: &ApiPath) -> Result<(), ApiError> {
    if caller.account.as_deref() == Some(path.account()) {
        return Ok(());
    }
    if (method == Method::GET || method == Method::HEAD) && path.area() == Some("public") {
        return Ok(());
    }
    match caller.account {
        None => Err(ApiError::new(
            Code::AuthorizationRequired,
            "this request needs authentication",
        )),
        Some(_) => Err(ApiError::new(
            Code::AuthorizationFailed,
            format!("no access to {}", path.full()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_public_readers() {
        let p = ApiPath::parse("/alice/public/x").unwrap();
        let s = ApiPath::parse("/alice/stor/x").unwrap();
        let anon = Caller { account: None };
        let bob = Caller {
            account: Some("bob".into()),
        };
        let alice = Caller {
            account: Some("alice".into()),
        };
        assert!(authorize(&anon, &Method::GET, &p).is_ok());
        assert!(authorize(&anon, &Method::PUT, &p).is_err());
        assert_eq!(
            authorize(&anon, &Method::GET, &s).unwrap_err().code,
            Code::AuthorizationRequired
        );
        assert_eq!(
            authorize(&bob, &Method::GET, &s).unwrap_err().code,
            Code::AuthorizationFailed
        );
        assert!(authorize(&alice, &Method::DELETE, &s).is_ok());
    }
}

/// How far a request's `Date` (or a signed URL's use) may be from now.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// (account, fingerprint) → (when looked up, the public key if it exists).
type KeyCache = std::collections::HashMap<(String, String), (std::time::Instant, Option<String>)>;

/// Verifies `Authorization: Signature` headers and signed URLs against the accounts' keys in
/// metadata (SPEC §6). No credentials at all make an anonymous caller (who may read `/public`).
#[derive(Debug)]
pub struct SignatureAuth {
    meta: mobula_metadata::MetadataClient,
    /// (account, fingerprint) → (looked up at, public key if any).
    cache: std::sync::Mutex<KeyCache>,
    /// Digests of (account, key, algorithm, signing string, signature) verified lately.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
}

/// How long a verified signature is taken as verified again (no longer than a key is cached).
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl SignatureAuth {
    pub fn new(meta: mobula_metadata::MetadataClient) -> Self {
        SignatureAuth {
            meta,
            cache: Default::default(),
            verified: Default::default(),
        }
    }

    /// The public key `account`/`fingerprint`, cached (60 s found, 5 s not found).
    async fn key(&self, account: &str, fingerprint: &str) -> Result<String, ApiError> {
        let k = (account.to_string(), fingerprint.to_string());
        if let Some((at, key)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&k) {
            let ttl = if key.is_some() { 60 } else { 5 };
            if at.elapsed().as_secs() < ttl {
                return key.clone().ok_or_else(|| no_key(account, fingerprint));
            }
        }
        if !self.meta.account_exists(account).await? {
            return Err(ApiError::new(
                Code::AccountDoesNotExist,
                format!("account {account} does not exist"),
            ));
        }
        let key = self
            .meta
            .key(account, fingerprint)
            .await?
            .map(|k| k.public_key);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k, (std::time::Instant::now(), key.clone()));
        key.ok_or_else(|| no_key(account, fingerprint))
    }

    async fn header(&self, parts: &http::request::Parts, value: &str) -> Result<Caller, ApiError> {
        let h = crate::signature::parse(value)?;
        let date = parts
            .headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    Code::InvalidSignature,
                    "a signed request needs a Date header",
                )
            })?;
        let when = httpdate::parse_http_date(date).map_err(|_| {
            ApiError::new(
                Code::InvalidSignature,
                "the Date header is not an HTTP date",
            )
        })?;
        check_skew(when)?;
        let key = self.key(&h.account, &h.fingerprint).await?;
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let msg = crate::signature::signing_string(&h, &parts.method, pq, &parts.headers)?;
        // The same signature over the same string by the same key, verified lately, is as
        // good now (the Date was checked above): clients reuse one per second and key.
        let seen = *blake3::Hasher::new()
            .update(h.account.as_bytes())
            .update(b"\0")
            .update(h.fingerprint.as_bytes())
            .update(b"\0")
            .update(h.algorithm.as_bytes())
            .update(b"\0")
            .update(key.as_bytes())
            .update(b"\0")
            .update(msg.as_bytes())
            .update(b"\0")
            .update(&h.signature)
            .finalize()
            .as_bytes();
        if !self.verified_lately(&seen) {
            crate::signature::verify(&key, &h.algorithm, msg.as_bytes(), &h.signature)?;
            self.remember(seen);
        }
        Ok(Caller {
            account: Some(h.account),
        })
    }

    fn verified_lately(&self, seen: &[u8; 32]) -> bool {
        let v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        v.get(seen).is_some_and(|t| t.elapsed() < VERIFIED_TTL)
    }

    fn remember(&self, seen: [u8; 32]) {
        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() >= 10_000 {
            v.retain(|_, t| t.elapsed() < VERIFIED_TTL);
            if v.len() >= 10_000 {
                v.clear();
            }
        }
        v.insert(seen, std::time::Instant::now());
    }

    async fn signed_url(&self, parts: &http::request::Parts) -> Result<Caller, ApiError> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(ApiError::new(
                Code::InvalidSignature,
                "signed URLs are for GET and HEAD only",
            ));
        }
        let q = crate::query(parts);
        let get = |k: &str| {
            q.get(k).cloned().ok_or_else(|| {
                ApiError::new(Code::InvalidSignature, format!("signed URL lacks {k}"))
            })
        };
        let (key_id, algorithm, expires) = (
            get("keyId")?,
            get("algorithm")?.to_ascii_lowercase(),
            get("expires")?,
        );
        let signature = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            get("signature")?,
        )
        .map_err(|_| ApiError::new(Code::InvalidSignature, "signature is not base64"))?;
        let expires: u64 = expires
            .parse()
            .map_err(|_| ApiError::new(Code::InvalidSignature, "expires is not a number"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if expires < now {
            return Err(ApiError::new(
                Code::RequestExpired,
                "the signed URL has expired",
            ));
        }
        let (account, fingerprint) = crate::signature::parse_key_id(&key_id)?;
        let key = self.key(&account, &fingerprint).await?;
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let msg = signed_url_string(
            parts.method.as_str(),
            host,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
        );
        crate::signature::verify(&key, &algorithm, msg.as_bytes(), &signature)?;
        Ok(Caller {
            account: Some(account),
        })
    }
}

fn no_key(account: &str, fingerprint: &str) -> ApiError {
    ApiError::new(
        Code::KeyDoesNotExist,
        format!("account {account} has no key {fingerprint}"),
    )
}

fn check_skew(when: std::time::SystemTime) -> Result<(), ApiError> {
    let now = std::time::SystemTime::now();
    let off = now.duration_since(when).unwrap_or_else(|e| e.duration());
    if off > CLOCK_SKEW {
        return Err(ApiError::new(
            Code::RequestExpired,
            format!("the request's Date is {}s away from now", off.as_secs()),
        ));
    }
    Ok(())
}

/// What a signed URL signs: `METHOD\nhost\npath\n<query without signature, pairs sorted>`,
/// with the path and pairs as they appear (still percent-encoded) in the URL.
pub fn signed_url_string(method: &str, host: &str, path: &str, raw_query: &str) -> String {
    let mut pairs: Vec<&str> = raw_query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("signature="))
        .collect();
    pairs.sort();
    format!("{method}\n{host}\n{path}\n{}", pairs.join("&"))
}

impl Authenticator for SignatureAuth {
    fn authenticate<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        _path: &'a ApiPath,
    ) -> BoxFuture<'a, Result<Caller, ApiError>> {
        Box::pin(async move {
            if let Some(v) = parts.headers.get(http::header::AUTHORIZATION) {
                let v = v.to_str().map_err(|_| {
                    ApiError::new(Code::InvalidSignature, "authorization is not text")
                })?;
                return self.header(parts, v).await;
            }
            if parts.uri.query().is_some_and(|q| q.contains("signature=")) {
                return self.signed_url(parts).await;
            }
            Ok(Caller { account: None })
        })
    }
}
