//! Client-side request signing (SPEC §6): the `Authorization: Signature` header over the `Date`
//! header, and signed URLs. Keys are private key files in any form OpenSSH reads (unencrypted;
//! [`crate::keyfile`]), or keys held by
//! ssh-agent ([`crate::ssh_agent`]): Ed25519, RSA, ECDSA P-256/P-384. The keyId names the key by its
//! MD5 fingerprint, as Manta clients do.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use ssh_key::private::{EcdsaKeypair, KeypairData};

enum Key {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    /// A key in ssh-agent: its public blob.
    Agent(crate::ssh_agent::Agent, Vec<u8>),
}

/// Signs requests as one key of one account.
pub struct Signer {
    pub key_id: String,
    pub algorithm: &'static str,
    key: Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({}, {})", self.key_id, self.algorithm)
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Signer {
    /// A signer for `account` from an OpenSSH private key file.
    pub fn from_file(path: &Path, account: &str) -> anyhow::Result<Signer> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_openssh(&text, account).with_context(|| format!("{}", path.display()))
    }

    /// A signer for `account` from a private key in any form OpenSSH reads
    /// ([`crate::keyfile`]).
    pub fn from_openssh(text: &str, account: &str) -> anyhow::Result<Signer> {
        let pk = crate::keyfile::parse(text)?;
        let public = pk.public_key().to_openssh()?;
        let (md5, _) =
            mobula_metadata::api::fingerprints(&public).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (algorithm, key) = match pk.key_data() {
            KeypairData::Ed25519(kp) => (
                "ed25519",
                Key::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                    &kp.private.to_bytes(),
                )),
            ),
            KeypairData::Rsa(kp) => {
                let n =
                    rsa::BigUint::from_bytes_be(kp.public.n.as_positive_bytes().context("rsa n")?);
                let e =
                    rsa::BigUint::from_bytes_be(kp.public.e.as_positive_bytes().context("rsa e")?);
                let d =
                    rsa::BigUint::from_bytes_be(kp.private.d.as_positive_bytes().context("rsa d")?);
                let p =
                    rsa::BigUint::from_bytes_be(kp.private.p.as_positive_bytes().context("rsa p")?);
                let q =
                    rsa::BigUint::from_bytes_be(kp.private.q.as_positive_bytes().context("rsa q")?);
                let key = rsa::RsaPrivateKey::from_components(n, e, d, vec![p, q])?;
                ("rsa-sha256", Key::Rsa(Box::new(key)))
            }
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { private, .. }) => (
                "ecdsa-sha256",
                Key::P256(p256::ecdsa::SigningKey::from_slice(private.as_slice())?),
            ),
            KeypairData::Ecdsa(EcdsaKeypair::NistP384 { private, .. }) => (
                "ecdsa-sha384",
                Key::P384(p384::ecdsa::SigningKey::from_slice(private.as_slice())?),
            ),
            _ => anyhow::bail!("unsupported key type (use Ed25519, RSA, ECDSA P-256 or P-384)"),
        };
        Ok(Signer {
            key_id: format!("/{account}/keys/{md5}"),
            algorithm,
            key,
        })
    }

    /// A signer for `account` with the agent's key whose MD5 (`aa:bb:…`) or SHA256
    /// (`SHA256:…`) fingerprint is `fingerprint`.
    pub fn from_agent(
        agent: crate::ssh_agent::Agent,
        fingerprint: &str,
        account: &str,
    ) -> anyhow::Result<Signer> {
        for (blob, _comment) in agent
            .identities()
            .context("asking ssh-agent for its keys")?
        {
            let alg = crate::ssh_agent::blob_algorithm(&blob)?;
            let text = format!("{alg} {}", b64(&blob));
            let Ok((md5, sha256)) = mobula_metadata::api::fingerprints(&text) else {
                continue;
            };
            if fingerprint != md5 && fingerprint != sha256 {
                continue;
            }
            let algorithm = match alg.as_str() {
                "ssh-ed25519" => "ed25519",
                "ssh-rsa" => "rsa-sha256",
                "ecdsa-sha2-nistp256" => "ecdsa-sha256",
                "ecdsa-sha2-nistp384" => "ecdsa-sha384",
                other => anyhow::bail!("ssh-agent key {fingerprint}: unsupported type {other}"),
            };
            return Ok(Signer {
                key_id: format!("/{account}/keys/{md5}"),
                algorithm,
                key: Key::Agent(agent, blob),
            });
        }
        anyhow::bail!("ssh-agent holds no key with fingerprint {fingerprint}")
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Agent(agent, blob) => self.sign_with_agent(agent, blob, msg).unwrap_or_else(|e| {
                // An unsigned request gets the server's 401/403 with its code.
                eprintln!("mobula: ssh-agent: {e:#}");
                Vec::new()
            }),
            Key::Ed25519(k) => ed25519_dalek::Signer::sign(k, msg).to_bytes().to_vec(),
            Key::Rsa(k) => {
                use rsa::signature::{SignatureEncoding, Signer};
                rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone())
                    .sign(msg)
                    .to_vec()
            }
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(k, msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::P384(k) => {
                let s: p384::ecdsa::Signature = p384::ecdsa::signature::Signer::sign(k, msg);
                s.to_der().as_bytes().to_vec()
            }
        }
    }

    fn sign_with_agent(
        &self,
        agent: &crate::ssh_agent::Agent,
        blob: &[u8],
        msg: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let flags = if self.algorithm == "rsa-sha256" {
            crate::ssh_agent::RSA_SHA2_256
        } else {
            0
        };
        let (alg, sig) = agent.sign(blob, msg, flags)?;
        Ok(match self.algorithm {
            "ecdsa-sha256" => {
                let raw = crate::ssh_agent::ecdsa_raw(&sig, 32)?;
                let s = p256::ecdsa::Signature::from_slice(&raw)?;
                s.to_der().as_bytes().to_vec()
            }
            "ecdsa-sha384" => {
                let raw = crate::ssh_agent::ecdsa_raw(&sig, 48)?;
                let s = p384::ecdsa::Signature::from_slice(&raw)?;
                s.to_der().as_bytes().to_vec()
            }
            "rsa-sha256" => {
                anyhow::ensure!(alg == "rsa-sha2-256", "the agent signed with {alg}");
                sig
            }
            _ => sig,
        })
    }

    /// The `Authorization` header for a request carrying `Date: <date>`.
    pub fn authorization(&self, date: &str) -> String {
        let sig = self.sign(format!("date: {date}").as_bytes());
        format!(
            "Signature keyId=\"{}\",algorithm=\"{}\",headers=\"date\",signature=\"{}\"",
            self.key_id,
            self.algorithm,
            b64(&sig)
        )
    }

    /// A signed URL for `GET` of `path` (already percent-encoded) at `base`, valid until
    /// `expires` (seconds since the epoch).
    pub fn sign_url(&self, base: &str, path: &str, expires: u64) -> String {
        let host = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let query = format!(
            "algorithm={}&expires={expires}&keyId={}",
            self.algorithm,
            enc(&self.key_id)
        );
        let msg = mobula_gateway::auth::signed_url_string("GET", host, path, &query);
        format!(
            "{base}{path}?{query}&signature={}",
            enc(&b64(&self.sign(msg.as_bytes())))
        )
    }
}
