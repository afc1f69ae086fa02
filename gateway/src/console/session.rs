//! Console sessions: who a browser is signed in as, and the token its writes must carry.
//!
//! A session is the cookie `mobula_session=v1.<access key>.<expiry>.<mac>`, where `mac` is the
//! BLAKE3 keyed hash (a MAC) of `session|<access key>|<expiry>` under a key derived from the
//! access key's secret. Nothing is stored on the gateway: any gateway that can look the key up
//! verifies it, removing the access key ends every session made with it (within the key
//! cache's few seconds), and a session ends at its expiry ([`LIFETIME`]). The cookie is
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it) and
//! scoped to `/console`.
//!
//! Every write also carries the session's CSRF token ([`Session::csrf`], the MAC of
//! `csrf|<cookie>`): in a form field `csrf` or the header `x-csrf-token`. A page of another
//! origin can neither read it nor make the browser send the cookie, so it cannot forge a write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::s3::keys::Keys;

/// The session cookie's name.
pub const COOKIE: &str = "mobula_session";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: String,
    /// The cookie's value (what the CSRF token is bound to).
    pub token: String,
    secret: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(secret: &str, what: &str) -> String {
    let key = blake3::derive_key("mobula console session v1", secret.as_bytes());
    blake3::keyed_hash(&key, what.as_bytes())
        .to_hex()
        .to_string()
}

/// Constant-time equality of two MACs.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Session {
    /// A new session for the key `access_key` of `account` with `secret`.
    pub fn new(access_key: &str, account: &str, secret: &str) -> Session {
        let expiry = now() + LIFETIME.as_secs();
        let m = mac(secret, &format!("session|{access_key}|{expiry}"));
        Session {
            account: account.to_string(),
            token: format!("v1.{access_key}.{expiry}.{m}"),
            secret: secret.to_string(),
        }
    }

    /// The session a request's cookie names, if it is valid and current.
    pub async fn from_headers(keys: &Keys, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, COOKIE)?;
        let mut parts = token.split('.');
        let (v, access_key, expiry, m) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let expiry: u64 = expiry.parse().ok()?;
        if v != "v1" || parts.next().is_some() || expiry <= now() {
            return None;
        }
        let key = keys.get(access_key).await.ok()?;
        let want = mac(&key.secret, &format!("session|{access_key}|{expiry}"));
        same(&want, m).then(|| Session {
            account: key.account,
            token: token.to_string(),
            secret: key.secret,
        })
    }

    /// The token this session's writes must carry.
    pub fn csrf(&self) -> String {
        mac(&self.secret, &format!("csrf|{}", self.token))
    }

    /// Whether `given` is this session's CSRF token.
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(&self.csrf(), g))
    }

    /// The `Set-Cookie` value that starts this session.
    pub fn set_cookie(&self, secure: bool) -> String {
        format!(
            "{COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.token,
            LIFETIME.as_secs(),
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_secret_and_session() {
        let s = Session::new("MBKEY", "alice", "secret1");
        let other = Session::new("MBKEY", "alice", "secret2");
        assert_ne!(s.token, other.token);
        assert!(s.csrf_ok(Some(&s.csrf())));
        assert!(!s.csrf_ok(Some(&other.csrf())));
        assert!(!s.csrf_ok(None));
        let c = s.set_cookie(false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age="));
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            format!("a=b; {COOKIE}={}", s.token).parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some(s.token.as_str()));
    }
}
