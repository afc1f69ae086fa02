//! SigV4 verification by hand, for the GET fast path ([`super::fast`]) only.
//!
//! It accepts a strict subset of what s3s accepts: `AWS4-HMAC-SHA256` in an `Authorization`
//! header or a presigned URL, service `s3`, every signed header present once, `host` signed.
//! Anything else — and every mismatch — is *not decided here*: the caller hands the request to
//! s3s, which answers it (with its exact error when it is wrong). So this module can only ever
//! say "yes, signed by this key" for a request whose canonical form it computed itself from the
//! request's own bytes; it never says "no".
//!
//! Signing keys (four HMACs) are cached per access key, day, region and secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::convert;

type HmacSha256 = Hmac<Sha256>;

/// The largest clock difference accepted (s3s's default too).
pub const MAX_SKEW_SECS: i64 = 900;
/// The longest a presigned URL may live (S3's limit: 7 days).
const MAX_EXPIRES_SECS: i64 = 604_800;
/// The SHA-256 of an empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a request claims about its signature.
#[derive(Debug, PartialEq)]
pub struct Claim<'a> {
    pub access_key: &'a str,
    /// `access key/day/region`: what a signing key is derived from (besides the secret).
    pub key_id: &'a str,
    pub region: &'a str,
    /// `yyyymmddThhmmssZ`.
    pub amz_date: &'a str,
    /// Lower-case, strictly ascending, `host` among them.
    pub signed: Vec<&'a str>,
    /// 32 bytes, from the claim's hex.
    pub signature: Vec<u8>,
    /// The canonical request's last line: the payload hash, or `UNSIGNED-PAYLOAD`.
    pub payload: &'a str,
}

/// `Credential=AK/yyyymmdd/region/s3/aws4_request`'s value: (access key, day, region, and the
/// `AK/yyyymmdd/region` it starts with).
fn credential(c: &str) -> Option<(&str, &str, &str, &str)> {
    let key_id = c.strip_suffix("/s3/aws4_request")?;
    let mut p = key_id.split('/');
    let (ak, day, region) = (p.next()?, p.next()?, p.next()?);
    let ok = p.next().is_none() && !ak.is_empty() && !region.is_empty();
    ok.then_some((ak, day, region, key_id))
}

fn signed_headers(s: &str) -> Option<Vec<&str>> {
    let v: Vec<&str> = s.split(';').collect();
    let ok = v.iter().all(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && v.windows(2).all(|w| w[0] < w[1])
        && v.contains(&"host");
    ok.then_some(v)
}

fn signature(s: &str) -> Option<Vec<u8>> {
    (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| hex::decode(s).ok())
        .flatten()
}

/// A claim whose credential day is `amz_date`'s.
fn claim<'a>(
    cred: &'a str,
    amz_date: &'a str,
    signed: &'a str,
    sig: &'a str,
    payload: &'a str,
) -> Option<Claim<'a>> {
    let (access_key, day, region, key_id) = credential(cred)?;
    (amz_date.get(..8)? == day).then_some(())?;
    Some(Claim {
        access_key,
        key_id,
        region,
        amz_date,
        signed: signed_headers(signed)?,
        signature: signature(sig)?,
        payload,
    })
}

/// The claim of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
/// Signature=…` header, with `x-amz-date` and `x-amz-content-sha256` (which must be
/// `UNSIGNED-PAYLOAD` or the empty payload's hash: the fast path serves bodiless GETs).
pub fn from_headers(h: &HeaderMap) -> Option<Claim<'_>> {
    let one = |n: &str| {
        let mut all = h.get_all(n).iter();
        let v = all.next()?.to_str().ok()?;
        all.next().is_none().then_some(v)
    };
    let rest = one("authorization")?.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let slot = match k {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return None,
        };
        if slot.replace(v).is_some() {
            return None;
        }
    }
    let payload = one("x-amz-content-sha256")?;
    (payload == "UNSIGNED-PAYLOAD" || payload == EMPTY_SHA256).then_some(())?;
    claim(cred?, one("x-amz-date")?, signed?, sig?, payload)
}

/// The claim of a presigned URL's decoded query `q` (names unique; the caller has checked that
/// no other parameter is present), with the URL's expiry in seconds.
pub fn from_query<'a>(q: &'a [(String, String)]) -> Option<(Claim<'a>, i64)> {
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    (get("X-Amz-Algorithm")? == "AWS4-HMAC-SHA256").then_some(())?;
    let expires: i64 = get("X-Amz-Expires")?.parse().ok()?;
    (1..=MAX_EXPIRES_SECS).contains(&expires).then_some(())?;
    let c = claim(
        get("X-Amz-Credential")?,
        get("X-Amz-Date")?,
        get("X-Amz-SignedHeaders")?,
        get("X-Amz-Signature")?,
        "UNSIGNED-PAYLOAD",
    )?;
    Some((c, expires))
}

/// Seconds since the epoch of `yyyymmddThhmmssZ`.
pub fn amz_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    (b.len() == 16 && b[8] == b'T' && b[15] == b'Z').then_some(())?;
    let (y, m, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    let ok = (1..=12).contains(&m) && (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 61;
    ok.then_some(())?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether a claim made at `amz_date` is in time: within the skew for a header signature; not
/// too far ahead and not past `expires` for a presigned URL.
pub fn in_time(amz_date: &str, expires: Option<i64>, now: i64) -> bool {
    let Some(t) = amz_time(amz_date) else {
        return false;
    };
    match expires {
        None => (now - t).abs() <= MAX_SKEW_SECS,
        Some(e) => t - now <= MAX_SKEW_SECS && now - t <= e,
    }
}

/// S3's URI encoding: unreserved bytes kept, `/` kept when `slash`, the rest `%XX`.
pub fn uri_encode(out: &mut String, s: &str, slash: bool) {
    let set = if slash {
        convert::ESCAPED_BUT_SLASH
    } else {
        convert::ESCAPED
    };
    out.extend(percent_encoding::utf8_percent_encode(s, set));
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of spaces made one.
fn push_value(out: &mut String, v: &str) {
    let mut words = v.split_ascii_whitespace();
    if let Some(w) = words.next() {
        out.push_str(w);
    }
    for w in words {
        out.push(' ');
        out.push_str(w);
    }
}

/// The canonical request of a GET of `path` (decoded) with the decoded `query` (without
/// `X-Amz-Signature`), or `None` when a signed header is missing or repeated, or a query name
/// has a character that encoding would change.
pub fn canonical_request(
    path: &str,
    query: &[(String, String)],
    h: &HeaderMap,
    c: &Claim<'_>,
) -> Option<String> {
    let mut out = String::with_capacity(512);
    out.push_str("GET\n");
    uri_encode(&mut out, path, true);
    out.push('\n');
    // Names of unreserved characters only (the presigned parameters are): their encoded order
    // is their own, so the pairs are sorted as they are and encoded straight into the request.
    let unreserved = |k: &str| {
        k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    };
    let mut q: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    if !q.iter().all(|(k, _)| unreserved(k)) {
        return None;
    }
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        uri_encode(&mut out, v, false);
    }
    out.push('\n');
    for name in &c.signed {
        let mut all = h.get_all(*name).iter();
        let v = all.next()?.to_str().ok()?;
        all.next().is_none().then_some(())?;
        out.push_str(name);
        out.push(':');
        push_value(&mut out, v);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&c.signed.join(";"));
    out.push('\n');
    out.push_str(c.payload);
    Some(out)
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Signing keys, cached: `access key/day/region` → (secret, key). A changed secret
/// recomputes the key.
#[derive(Debug, Default)]
pub struct SigningKeys(Mutex<HashMap<String, (String, [u8; 32])>>);

impl SigningKeys {
    fn key(&self, c: &Claim<'_>, secret: &str) -> [u8; 32] {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, k)) = map.get(c.key_id) {
            if s == secret {
                return *k;
            }
        }
        let k = hmac(
            format!("AWS4{secret}").as_bytes(),
            &c.amz_date.as_bytes()[..8],
        );
        let k = hmac(&k, c.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(c.key_id.to_string(), (secret.to_string(), k));
        k
    }

    /// Whether `c`'s signature is `secret`'s over `canonical` (compared in constant time).
    pub fn verify(&self, c: &Claim<'_>, secret: &str, canonical: &str) -> bool {
        let day = &c.amz_date[..8];
        let sts = format!(
            "AWS4-HMAC-SHA256\n{}\n{day}/{}/s3/aws4_request\n{}",
            c.amz_date,
            c.region,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut m =
            HmacSha256::new_from_slice(&self.key(c, secret)).expect("HMAC takes any key length");
        m.update(sts.as_bytes());
        m.verify_slice(&c.signature).is_ok()
    }
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
