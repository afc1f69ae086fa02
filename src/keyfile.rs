//! Private key files in every form OpenSSH reads, turned into one [`ssh_key::PrivateKey`]:
//! the OpenSSH format (`BEGIN OPENSSH PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
//! `ssh-keygen -m PEM` and older OpenSSH wrote), PKCS#8 (`BEGIN PRIVATE KEY`: RSA, ECDSA
//! P-256/P-384, Ed25519) and SEC1 (`BEGIN EC PRIVATE KEY`). Encrypted keys of any form get an
//! error saying what to do instead. Also finds the key with a given fingerprint in a directory
//! (`~/.ssh`), as node-manta does when no agent holds it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};
use ssh_key::PrivateKey;

const ENCRYPTED: &str = "is encrypted: add it to ssh-agent (`ssh-add FILE`) and set MOBULA_KEY_ID \
     (or MANTA_KEY_ID) to its fingerprint, or use a decrypted copy";

/// Parse a private key file's text, whatever its form.
pub fn parse(text: &str) -> anyhow::Result<PrivateKey> {
    let text = text.trim_start();
    let label = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"))
        .unwrap_or("");
    let data = match label {
        "OPENSSH PRIVATE KEY" => {
            let pk = PrivateKey::from_openssh(text).context("parsing the OpenSSH private key")?;
            if pk.is_encrypted() {
                bail!("the private key {ENCRYPTED}");
            }
            return Ok(pk);
        }
        "ENCRYPTED PRIVATE KEY" => bail!("the PKCS#8 private key {ENCRYPTED}"),
        _ if text.contains("Proc-Type: 4,ENCRYPTED") => {
            bail!("the PEM private key {ENCRYPTED}")
        }
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            let k = rsa::RsaPrivateKey::from_pkcs1_pem(text).context("parsing the PKCS#1 key")?;
            KeypairData::from(RsaKeypair::try_from(k)?)
        }
        "EC PRIVATE KEY" => {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
                p256_pair(k)
            } else {
                let k = p384::SecretKey::from_sec1_pem(text)
                    .context("parsing the SEC1 key (P-256 and P-384 are supported)")?;
                p384_pair(k)
            }
        }
        "PRIVATE KEY" => pkcs8(text)?,
        "" => bail!("not a private key file (no -----BEGIN … PRIVATE KEY----- line)"),
        other => bail!("unsupported key file ({other})"),
    };
    Ok(PrivateKey::new(data, "")?)
}

/// A PKCS#8 key of any supported algorithm.
fn pkcs8(text: &str) -> anyhow::Result<KeypairData> {
    use rsa::pkcs8::DecodePrivateKey;
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
        return Ok(RsaKeypair::try_from(k)?.into());
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
        return Ok(p256_pair(k));
    }
    if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text) {
        return Ok(p384_pair(k));
    }
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
        return Ok(Ed25519Keypair::from(k).into());
    }
    bail!("unsupported PKCS#8 key (use Ed25519, RSA, ECDSA P-256 or P-384)")
}

fn p256_pair(k: p256::SecretKey) -> KeypairData {
    let public = k.public_key();
    EcdsaKeypair::NistP256 {
        private: k.into(),
        public: public.into(),
    }
    .into()
}

fn p384_pair(k: p384::SecretKey) -> KeypairData {
    let public = k.public_key();
    EcdsaKeypair::NistP384 {
        private: k.into(),
        public: public.into(),
    }
    .into()
}

/// The private key in `dir` whose public key has `fingerprint` (MD5 `aa:bb:…` or
/// `SHA256:…`), if any: files beside a `.pub` first, then any other file that parses.
pub fn find(dir: &Path, fingerprint: &str) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "pub"))
        .collect();
    files.sort_by_key(|p| !p.with_extension("pub").exists() && !has_pub(p));
    files.into_iter().find(|p| {
        let Ok(text) = std::fs::read_to_string(p) else {
            return false;
        };
        if !text.contains("PRIVATE KEY-----") {
            return false;
        }
        let Ok(key) = parse(&text) else { return false };
        let Ok(public) = key.public_key().to_openssh() else {
            return false;
        };
        mobula_metadata::api::fingerprints(&public)
            .is_ok_and(|(md5, sha256)| md5 == fingerprint || sha256 == fingerprint)
    })
}

fn has_pub(p: &Path) -> bool {
    let mut s = p.as_os_str().to_owned();
    s.push(".pub");
    Path::new(&s).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn same(a: &PrivateKey, b: &PrivateKey) {
        assert_eq!(
            a.public_key().to_openssh().unwrap(),
            b.public_key().to_openssh().unwrap()
        );
    }

    #[test]
    fn every_form_openssh_reads() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        let lf = rsa::pkcs8::LineEnding::LF;
        // RSA: PKCS#1 and PKCS#8.
        let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let want = PrivateKey::new(RsaKeypair::try_from(&rsa).unwrap().into(), "").unwrap();
        same(&parse(&rsa.to_pkcs1_pem(lf).unwrap()).unwrap(), &want);
        same(&parse(&rsa.to_pkcs8_pem(lf).unwrap()).unwrap(), &want);
        // ECDSA: SEC1 and PKCS#8, both curves.
        let k = p256::SecretKey::random(&mut OsRng);
        let want = PrivateKey::new(p256_pair(k.clone()), "").unwrap();
        same(&parse(&k.to_sec1_pem(lf).unwrap()).unwrap(), &want);
        same(&parse(&k.to_pkcs8_pem(lf).unwrap()).unwrap(), &want);
        let k = p384::SecretKey::random(&mut OsRng);
        let want = PrivateKey::new(p384_pair(k.clone()), "").unwrap();
        same(&parse(&k.to_sec1_pem(lf).unwrap()).unwrap(), &want);
        // Ed25519: PKCS#8 and the OpenSSH format.
        let k = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let want = PrivateKey::new(Ed25519Keypair::from(k.clone()).into(), "").unwrap();
        same(&parse(&k.to_pkcs8_pem(lf).unwrap()).unwrap(), &want);
        let openssh = want.to_openssh(ssh_key::LineEnding::LF).unwrap();
        same(&parse(&openssh).unwrap(), &want);
    }

    #[test]
    fn encrypted_and_foreign_files_get_clear_errors() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let e = parse(pkcs1).unwrap_err().to_string();
        assert!(e.contains("encrypted") && e.contains("ssh-add"), "{e}");
        let p8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(parse(p8).unwrap_err().to_string().contains("encrypted"));
        assert!(parse("ssh-ed25519 AAAA x")
            .unwrap_err()
            .to_string()
            .contains("not a private key"));
    }

    #[test]
    fn finds_a_key_by_fingerprint() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let dir = tempfile::tempdir().unwrap();
        let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let path = dir.path().join("id_rsa");
        std::fs::write(
            &path,
            rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.path().join("known_hosts"), "x").unwrap();
        let public = parse(&std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap();
        let (md5, sha256) = mobula_metadata::api::fingerprints(&public).unwrap();
        assert_eq!(find(dir.path(), &md5), Some(path.clone()));
        assert_eq!(find(dir.path(), &sha256), Some(path));
        assert_eq!(find(dir.path(), "00:11"), None);
    }
}
