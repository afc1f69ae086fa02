//! SigV4 presigned URLs for the S3 benchmark's load client (HMAC-SHA256 over `sha2`; the same
//! canonical form boto3 presigns with: `UNSIGNED-PAYLOAD`, only `host` signed).

use sha2::{Digest, Sha256};

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// S3's URI encoding: everything but unreserved characters (and `/` in paths).
fn enc(s: &str, slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone)]
pub struct Signer {
    host: String,
    ak: String,
    sk: String,
    /// The signing key of the day it was derived for (four HMACs saved per request: the load
    /// client shares the machine's two cores with the server it measures).
    key: std::sync::Arc<std::sync::Mutex<(String, [u8; 32])>>,
}

impl Signer {
    pub fn new(host: &str, ak: &str, sk: &str) -> Signer {
        Signer {
            host: host.into(),
            ak: ak.into(),
            sk: sk.into(),
            key: Default::default(),
        }
    }

    /// A presigned URL for `method` on `/bucket/key` with extra query `params`.
    pub fn presign(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        params: &[(&str, &str)],
    ) -> String {
        let (amz, day) = stamp_now();
        let scope = format!("{day}/us-east-1/s3/aws4_request");
        let path = if key.is_empty() {
            format!("/{bucket}")
        } else {
            format!("/{bucket}/{}", enc(key, true))
        };
        let cred = format!("{}/{scope}", self.ak);
        let mut q: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (enc(k, false), enc(v, false)))
            .collect();
        for (k, v) in [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", cred.as_str()),
            ("X-Amz-Date", amz.as_str()),
            ("X-Amz-Expires", "3600"),
            ("X-Amz-SignedHeaders", "host"),
        ] {
            q.push((k.into(), enc(v, false)));
        }
        q.sort();
        let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let canonical = format!(
            "{method}\n{path}\n{query}\nhost:{}\n\nhost\nUNSIGNED-PAYLOAD",
            self.host
        );
        let sig = self.signature(&amz, &day, &canonical);
        format!("http://{}{path}?{query}&X-Amz-Signature={sig}", self.host)
    }

    /// A GET of `/bucket/key` signed in an `Authorization` header, as SDKs sign: the URL and
    /// the headers to send (`host`, `x-amz-content-sha256: UNSIGNED-PAYLOAD` and `x-amz-date`
    /// signed).
    #[allow(dead_code)] // the e2e tests' (tests/e2e/s3_fast.rs); the benchmarks presign
    pub fn signed_get(&self, bucket: &str, key: &str) -> (String, Vec<(String, String)>) {
        let (amz, day) = stamp_now();
        let scope = format!("{day}/us-east-1/s3/aws4_request");
        let path = format!("/{bucket}/{}", enc(key, true));
        let names = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "GET\n{path}\n\nhost:{}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{amz}\n\n{names}\nUNSIGNED-PAYLOAD",
            self.host
        );
        let sig = self.signature(&amz, &day, &canonical);
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={sig}",
            self.ak
        );
        let headers = vec![
            (
                "x-amz-content-sha256".to_string(),
                "UNSIGNED-PAYLOAD".to_string(),
            ),
            ("x-amz-date".to_string(), amz),
            ("authorization".to_string(), auth),
        ];
        (format!("http://{}{path}", self.host), headers)
    }

    /// The signature of a canonical request made at `amz` (on `day`).
    fn signature(&self, amz: &str, day: &str, canonical: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256\n{amz}\n{day}/us-east-1/s3/aws4_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        hex::encode(hmac(&self.signing_key(day), sts.as_bytes()))
    }

    fn signing_key(&self, day: &str) -> [u8; 32] {
        let mut cached = self.key.lock().unwrap();
        if cached.0 != day {
            let mut k = hmac(format!("AWS4{}", self.sk).as_bytes(), day.as_bytes());
            for part in ["us-east-1", "s3", "aws4_request"] {
                k = hmac(&k, part.as_bytes());
            }
            *cached = (day.to_string(), k);
        }
        cached.1
    }

    /// A presigned ListObjectsV2 of `bucket`.
    pub fn list(&self, bucket: &str, prefix: &str, delimiter: &str, token: &str) -> String {
        let mut p = vec![
            ("list-type", "2"),
            ("prefix", prefix),
            ("delimiter", delimiter),
        ];
        if !token.is_empty() {
            p.push(("continuation-token", token));
        }
        self.presign("GET", bucket, "", &p)
    }
}

/// [`stamp`] of now.
fn stamp_now() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    stamp(now)
}

/// `YYYYMMDDTHHMMSSZ` and `YYYYMMDD` of a Unix time (UTC).
fn stamp(secs: u64) -> (String, String) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let day = format!("{y:04}{m:02}{d:02}");
    let amz = format!(
        "{day}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (amz, day)
}
