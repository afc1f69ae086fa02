//! HTTP Signature verification (Manta / joyent http-signature scheme), SPEC §6.
//!
//! `Authorization: Signature keyId="/:account/keys/<fingerprint>",algorithm="<alg>",
//! [headers="date (request-target) …",]signature="<base64>"` signs the listed headers (default
//! `date`) as `name: value` lines joined by `\n`. Fingerprints are MD5 (`aa:bb:…`) or
//! `SHA256:<base64>` of the public key blob. Algorithms: rsa-sha1/256/512, ecdsa-sha256 (P-256),
//! ecdsa-sha384 (P-384), ed25519; ECDSA signatures may be DER or raw `r‖s`.
//!
//! This module is pure: parsing, the signing string and verification (key fingerprints are
//! `mobula_metadata::api::fingerprints`, beside the account keys). Key lookup
//! and caching live with the authenticator that uses it.

use base64::Engine;
use mobula_http::{ApiError, Code};
use ssh_key::public::{EcdsaPublicKey, KeyData};

/// A parsed `Authorization: Signature …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub account: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub headers: Vec<String>,
    pub signature: Vec<u8>,
}

fn bad(code: Code, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, msg)
}

/// Parse the header value. Errors: `InvalidSignature` (malformed), `InvalidKeyId`.
pub fn parse(value: &str) -> Result<SignatureHeader, ApiError> {
    const MAX: usize = 8192;
    if value.len() > MAX {
        return Err(bad(
            Code::InvalidSignature,
            "authorization header too large",
        ));
    }
    let rest = value.strip_prefix("Signature ").ok_or_else(|| {
        bad(
            Code::InvalidSignature,
            "authorization scheme must be Signature",
        )
    })?;
    let (mut key_id, mut alg, mut headers, mut sig) = (None, None, None, None);
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s
            .split_once("=\"")
            .ok_or_else(|| bad(Code::InvalidSignature, "malformed authorization parameters"))?;
        let (v, after) = after.split_once('"').ok_or_else(|| {
            bad(
                Code::InvalidSignature,
                "unterminated authorization parameter",
            )
        })?;
        match k.trim() {
            "keyId" => key_id = Some(v.to_string()),
            "algorithm" => alg = Some(v.to_ascii_lowercase()),
            "headers" => headers = Some(v.to_ascii_lowercase()),
            "signature" => sig = Some(v.to_string()),
            _ => {}
        }
        s = after.trim_start_matches(',').trim();
    }
    let key_id = key_id.ok_or_else(|| bad(Code::InvalidSignature, "keyId missing"))?;
    let algorithm = alg.ok_or_else(|| bad(Code::InvalidSignature, "algorithm missing"))?;
    let sig = sig.ok_or_else(|| bad(Code::InvalidSignature, "signature missing"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| bad(Code::InvalidSignature, "signature is not base64"))?;
    let (account, fingerprint) = parse_key_id(&key_id)?;
    Ok(SignatureHeader {
        account,
        fingerprint,
        algorithm,
        headers: headers
            .unwrap_or_else(|| "date".into())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        signature,
    })
}

/// `/:account/keys/<fingerprint>` → (account, fingerprint). Anything else is `InvalidKeyId`.
pub fn parse_key_id(key_id: &str) -> Result<(String, String), ApiError> {
    let invalid = || bad(Code::InvalidKeyId, format!("invalid keyId {key_id:?}"));
    // SHA256 fingerprints are base64 and may contain `/`: split off the account and `keys/` only.
    let (account, rest) = key_id
        .strip_prefix('/')
        .and_then(|k| k.split_once('/'))
        .ok_or_else(invalid)?;
    let fp = rest.strip_prefix("keys/").ok_or_else(invalid)?;
    let account_ok = account.len() <= 64
        && account
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
        && account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let fp_ok = !fp.is_empty()
        && fp.len() <= 100
        && fp.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'+' | b'/' | b'=' | b'-' | b'_')
        });
    if !account_ok || !fp_ok {
        return Err(invalid());
    }
    Ok((account.to_string(), fp.to_string()))
}

/// The string that was signed: one `name: value` line per listed header.
pub fn signing_string(
    h: &SignatureHeader,
    method: &http::Method,
    path_and_query: &str,
    headers: &http::HeaderMap,
) -> Result<String, ApiError> {
    let mut lines = Vec::with_capacity(h.headers.len());
    for name in &h.headers {
        if name == "(request-target)" {
            lines.push(format!(
                "(request-target): {} {path_and_query}",
                method.as_str().to_ascii_lowercase()
            ));
            continue;
        }
        let v = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                bad(
                    Code::InvalidSignature,
                    format!("signed header {name} is missing"),
                )
            })?;
        lines.push(format!("{name}: {v}"));
    }
    if !h.headers.iter().any(|n| n == "date") {
        return Err(bad(
            Code::InvalidSignature,
            "the date header must be signed",
        ));
    }
    Ok(lines.join("\n"))
}

/// Verify `sig` over `msg` with the OpenSSH public key `openssh` and `algorithm`.
pub fn verify(openssh: &str, algorithm: &str, msg: &[u8], sig: &[u8]) -> Result<(), ApiError> {
    let failed = || bad(Code::InvalidSignature, "the signature does not verify");
    let key = ssh_key::PublicKey::from_openssh(openssh.trim()).map_err(ApiError::internal)?;
    match (key.key_data(), algorithm) {
        (KeyData::Rsa(k), "rsa-sha1" | "rsa-sha256" | "rsa-sha512") => {
            use rsa::pkcs1v15::{Signature, VerifyingKey};
            use rsa::signature::Verifier;
            let n = rsa::BigUint::from_bytes_be(k.n.as_positive_bytes().ok_or_else(failed)?);
            let e = rsa::BigUint::from_bytes_be(k.e.as_positive_bytes().ok_or_else(failed)?);
            let pk = rsa::RsaPublicKey::new(n, e).map_err(|_| failed())?;
            let s = Signature::try_from(sig).map_err(|_| failed())?;
            let ok = match algorithm {
                "rsa-sha1" => VerifyingKey::<sha1::Sha1>::new(pk).verify(msg, &s).is_ok(),
                "rsa-sha256" => VerifyingKey::<sha2::Sha256>::new(pk)
                    .verify(msg, &s)
                    .is_ok(),
                _ => VerifyingKey::<sha2::Sha512>::new(pk)
                    .verify(msg, &s)
                    .is_ok(),
            };
            ok.then_some(()).ok_or_else(failed)
        }
        (KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)), "ecdsa-sha256") => {
            use p256::ecdsa::signature::Verifier;
            use p256::ecdsa::{Signature, VerifyingKey};
            let vk = VerifyingKey::from_sec1_bytes(point.as_bytes()).map_err(|_| failed())?;
            let s = Signature::from_der(sig)
                .or_else(|_| Signature::from_slice(sig))
                .map_err(|_| failed())?;
            vk.verify(msg, &s).map_err(|_| failed())
        }
        (KeyData::Ecdsa(EcdsaPublicKey::NistP384(point)), "ecdsa-sha384") => {
            use p384::ecdsa::signature::Verifier;
            use p384::ecdsa::{Signature, VerifyingKey};
            let vk = VerifyingKey::from_sec1_bytes(point.as_bytes()).map_err(|_| failed())?;
            let s = Signature::from_der(sig)
                .or_else(|_| Signature::from_slice(sig))
                .map_err(|_| failed())?;
            vk.verify(msg, &s).map_err(|_| failed())
        }
        // node-manta (sshpk) names its Ed25519 signatures "ed25519-sha512": the same scheme.
        (KeyData::Ed25519(k), "ed25519" | "ed25519-sha512") => {
            use ed25519_dalek::Verifier;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&k.0).map_err(|_| failed())?;
            let s = ed25519_dalek::Signature::from_slice(sig).map_err(|_| failed())?;
            vk.verify(msg, &s).map_err(|_| failed())
        }
        (_, alg) => Err(bad(
            Code::InvalidSignature,
            format!("algorithm {alg} does not match the key's type"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mobula_metadata::api::fingerprints;
    use ssh_key::public::{Ed25519PublicKey, RsaPublicKey};
    use ssh_key::Mpint;

    fn openssh(k: KeyData) -> String {
        ssh_key::PublicKey::new(k, "test").to_openssh().unwrap()
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn every_algorithm_verifies_and_rejects_tampering() {
        let msg = b"date: Fri, 27 Nov 2026 05:00:00 GMT";
        let mut cases: Vec<(String, &str, Vec<u8>)> = Vec::new();

        let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let ed_pub = openssh(KeyData::Ed25519(Ed25519PublicKey(
            ed.verifying_key().to_bytes(),
        )));
        use ed25519_dalek::Signer;
        cases.push((ed_pub.clone(), "ed25519", ed.sign(msg).to_bytes().to_vec()));
        cases.push((ed_pub, "ed25519-sha512", ed.sign(msg).to_bytes().to_vec()));

        let p = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let point = p.verifying_key().to_encoded_point(false);
        let p_pub = openssh(KeyData::Ecdsa(
            EcdsaPublicKey::from_sec1_bytes(point.as_bytes()).unwrap(),
        ));
        let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&p, msg);
        cases.push((
            p_pub.clone(),
            "ecdsa-sha256",
            sig.to_der().as_bytes().to_vec(),
        ));
        cases.push((p_pub, "ecdsa-sha256", sig.to_bytes().to_vec()));

        let q = p384::ecdsa::SigningKey::from_slice(&[5u8; 48]).unwrap();
        let point = q.verifying_key().to_encoded_point(false);
        let q_pub = openssh(KeyData::Ecdsa(
            EcdsaPublicKey::from_sec1_bytes(point.as_bytes()).unwrap(),
        ));
        let sig: p384::ecdsa::Signature = p384::ecdsa::signature::Signer::sign(&q, msg);
        cases.push((q_pub, "ecdsa-sha384", sig.to_der().as_bytes().to_vec()));

        let r = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        use rsa::traits::PublicKeyParts;
        let r_pub = openssh(KeyData::Rsa(RsaPublicKey {
            e: Mpint::from_positive_bytes(&r.e().to_bytes_be()).unwrap(),
            n: Mpint::from_positive_bytes(&r.n().to_bytes_be()).unwrap(),
        }));
        for alg in ["rsa-sha1", "rsa-sha256", "rsa-sha512"] {
            use rsa::signature::{SignatureEncoding, Signer};
            let sig = match alg {
                "rsa-sha1" => rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(r.clone())
                    .sign(msg)
                    .to_vec(),
                "rsa-sha256" => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(r.clone())
                    .sign(msg)
                    .to_vec(),
                _ => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(r.clone())
                    .sign(msg)
                    .to_vec(),
            };
            cases.push((r_pub.clone(), alg, sig));
        }

        for (key, alg, sig) in &cases {
            verify(key, alg, msg, sig).unwrap_or_else(|e| panic!("{alg}: {e}"));
            let e = verify(key, alg, b"date: another day", sig).unwrap_err();
            assert_eq!(e.code, Code::InvalidSignature, "{alg} tampered");
            let mut bad_sig = sig.clone();
            bad_sig[5] ^= 1;
            assert!(
                verify(key, alg, msg, &bad_sig).is_err(),
                "{alg} corrupted signature"
            );
            let (md5, sha) = fingerprints(key).unwrap();
            assert_eq!(md5.len(), 47, "{md5}");
            assert!(sha.starts_with("SHA256:"));
        }
        // A key's signature under another algorithm is refused.
        assert!(verify(&cases[0].0, "rsa-sha256", msg, &cases[0].2).is_err());
        let h = format!(
            "Signature keyId=\"/alice/keys/{}\",algorithm=\"ed25519\",signature=\"{}\"",
            fingerprints(&cases[0].0).unwrap().0,
            b64(&cases[0].2)
        );
        let parsed = parse(&h).unwrap();
        assert_eq!(parsed.account, "alice");
        assert_eq!(parsed.headers, vec!["date"]);
    }

    #[test]
    fn malformed_headers_and_key_ids() {
        for bad in [
            "",
            "Basic abc",
            "Signature ",
            "Signature keyId=\"/a/keys/x\",algorithm=\"ed25519\"",
            "Signature keyId=\"/a/keys/x\",algorithm=\"ed25519\",signature=\"!!!\"",
            "Signature keyId=\"/a/keys/x,algorithm=\"ed25519\",signature=\"AAAA\"",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().code,
                Code::InvalidSignature,
                "{bad:?}"
            );
        }
        for bad in [
            "/a/keys/../../x",
            "a/keys/x",
            "/a/notkeys/x",
            "/A/keys/x",
            "/a/keys/",
            "/a/keys/%2e%2e",
            "/a/keys/x/../y",
        ] {
            assert_eq!(
                parse_key_id(bad).unwrap_err().code,
                Code::InvalidKeyId,
                "{bad:?}"
            );
        }
        let huge = format!("Signature keyId=\"{}\"", "x".repeat(10_000));
        assert_eq!(parse(&huge).unwrap_err().code, Code::InvalidSignature);
        assert_eq!(
            parse_key_id("/alice/keys/SHA256:abc+/=").unwrap(),
            ("alice".to_string(), "SHA256:abc+/=".to_string())
        );
    }
}
