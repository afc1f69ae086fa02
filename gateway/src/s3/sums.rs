//! The `x-amz-checksum-*` family: which checksums a body is hashed with while it streams to the
//! nodes (those claimed in headers, named by `x-amz-sdk-checksum-algorithm` or announced in
//! `x-amz-trailer`), and their verification once the body has ended (values from the headers or
//! from the aws-chunked trailer). A mismatch is `BadDigest` and nothing is committed.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm};
use s3s::{s3_error, S3Result, TrailingHeaders};

use super::convert::CHECKSUMS;

/// The checksums an input claims (PutObject and UploadPart share the field names), in
/// [`CHECKSUMS`] order, as [`Sums::new`] takes them.
macro_rules! claimed {
    ($i:expr) => {
        [
            $i.checksum_crc32.clone(),
            $i.checksum_crc32c.clone(),
            $i.checksum_crc64nvme.clone(),
            $i.checksum_sha1.clone(),
            $i.checksum_sha256.clone(),
        ]
    };
}
pub(crate) use claimed;

/// Checksums being computed over one body, and the values the client claimed.
#[derive(Clone)]
pub struct Sums {
    hasher: Arc<Mutex<Option<ChecksumHasher>>>,
    claimed: [Option<String>; 5],
}

impl std::fmt::Debug for Sums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sums")
            .field("claimed", &self.claimed)
            .finish()
    }
}

fn values(c: &Checksum) -> [Option<String>; 5] {
    [
        c.checksum_crc32.clone(),
        c.checksum_crc32c.clone(),
        c.checksum_crc64nvme.clone(),
        c.checksum_sha1.clone(),
        c.checksum_sha256.clone(),
    ]
}

impl Sums {
    /// Set up for a body whose headers claimed `claimed` (in [`CHECKSUMS`] order).
    pub fn new(
        headers: &HeaderMap,
        claimed: [Option<String>; 5],
        algorithm: Option<&ChecksumAlgorithm>,
    ) -> Sums {
        let trailer = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let alg = algorithm.map(|a| format!("x-amz-checksum-{}", a.as_str().to_ascii_lowercase()));
        let want = |i: usize| {
            claimed[i].is_some()
                || alg.as_deref() == Some(CHECKSUMS[i])
                || trailer.split(',').any(|t| t.trim() == CHECKSUMS[i])
        };
        let mut h = ChecksumHasher::default();
        if want(0) {
            h.crc32 = Some(Default::default());
        }
        if want(1) {
            h.crc32c = Some(Default::default());
        }
        if want(2) {
            h.crc64nvme = Some(Default::default());
        }
        if want(3) {
            h.sha1 = Some(Default::default());
        }
        if want(4) {
            h.sha256 = Some(Default::default());
        }
        Sums {
            hasher: Arc::new(Mutex::new(Some(h))),
            claimed,
        }
    }

    /// Hash the next piece of the body.
    pub fn update(&self, b: &[u8]) {
        if let Some(h) = self
            .hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            h.update(b);
        }
    }

    /// After the body: check every claimed value (headers, then the trailer) against the computed
    /// one. Returns the computed checksums as (stored header name, base64 value).
    pub fn verify(&self, trailers: Option<&TrailingHeaders>) -> S3Result<Vec<(String, String)>> {
        let h = self
            .hasher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| s3_error!(InternalError, "checksums already taken"))?;
        let computed = values(&h.finalize());
        let mut claimed = self.claimed.clone();
        if let Some(t) = trailers.and_then(|t| t.take()) {
            for (i, name) in CHECKSUMS.iter().enumerate() {
                if let Some(v) = t.get(*name).and_then(|v| v.to_str().ok()) {
                    claimed[i] = Some(v.to_string());
                }
            }
        }
        let mut out = Vec::new();
        for (i, name) in CHECKSUMS.iter().enumerate() {
            if let Some(want) = &claimed[i] {
                if computed[i].as_deref() != Some(want.as_str()) {
                    return Err(s3_error!(
                        BadDigest,
                        "the {name} you specified did not match the calculated checksum"
                    ));
                }
            }
            if let Some(v) = &computed[i] {
                out.push((name.to_string(), v.clone()));
            }
        }
        Ok(out)
    }
}

/// Fill the checksum fields of an output from stored (name, value) pairs.
pub fn fill(sums: &[(String, String)], c: &mut Checksum) {
    for (name, v) in sums {
        let slot = match name.as_str() {
            "x-amz-checksum-crc32" => &mut c.checksum_crc32,
            "x-amz-checksum-crc32c" => &mut c.checksum_crc32c,
            "x-amz-checksum-crc64nvme" => &mut c.checksum_crc64nvme,
            "x-amz-checksum-sha1" => &mut c.checksum_sha1,
            "x-amz-checksum-sha256" => &mut c.checksum_sha256,
            _ => continue,
        };
        *slot = Some(v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_checksums_are_verified() {
        // CRC32 of "hello" is 0x3610a686.
        let good = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            0x3610a686u32.to_be_bytes(),
        );
        let s = Sums::new(
            &HeaderMap::new(),
            [Some(good.clone()), None, None, None, None],
            None,
        );
        s.update(b"hel");
        s.update(b"lo");
        let out = s.verify(None).unwrap();
        assert_eq!(out, vec![("x-amz-checksum-crc32".to_string(), good)]);
        let bad = Sums::new(
            &HeaderMap::new(),
            [Some("AAAAAA==".into()), None, None, None, None],
            None,
        );
        bad.update(b"hello");
        assert_eq!(
            bad.verify(None).unwrap_err().code(),
            &s3s::S3ErrorCode::BadDigest
        );
        // Nothing claimed, nothing asked: nothing computed.
        let none = Sums::new(&HeaderMap::new(), Default::default(), None);
        none.update(b"x");
        assert!(none.verify(None).unwrap().is_empty());
    }
}
