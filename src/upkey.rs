//! `mobula up`'s account key: the user's own `~/.ssh` key when there is one (Ed25519, ECDSA,
//! RSA, in that order of preference, with its private half beside it), else a key pair generated
//! once into `<data>/keys/`. The public key is registered for the `up` account (once), and `up`
//! prints the environment a client needs, for the `mobula` CLI and for node-manta alike.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mobula_metadata::MetadataClient;

/// The key `up` uses: its private key file and public key text.
#[derive(Debug)]
pub struct UpKey {
    pub private: PathBuf,
    pub public: String,
    pub md5: String,
}

/// Find the user's key, or make (once) one in `data/keys`.
pub fn find_or_make(data: &Path) -> anyhow::Result<UpKey> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut candidates: Vec<PathBuf> = ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .filter_map(|n| Some(home.as_ref()?.join(".ssh").join(n)))
        .collect();
    let generated = data.join("keys").join("id_ed25519");
    candidates.push(generated.clone());
    for private in candidates {
        let pubfile = private.with_extension("pub");
        if private.exists() && pubfile.exists() {
            let public = std::fs::read_to_string(&pubfile)?.trim().to_string();
            let (md5, _) = mobula_metadata::api::fingerprints(&public)
                .map_err(|e| anyhow::anyhow!("{}: {e}", pubfile.display()))?;
            return Ok(UpKey {
                private,
                public,
                md5,
            });
        }
    }
    let key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
        .context("generating a key")?;
    std::fs::create_dir_all(generated.parent().expect("keys dir"))?;
    let text = key.to_openssh(ssh_key::LineEnding::LF)?;
    write_private(&generated, text.as_bytes())?;
    let public = key.public_key().to_openssh()?;
    std::fs::write(
        generated.with_extension("pub"),
        format!("{public} mobula-up\n"),
    )?;
    let (md5, _) =
        mobula_metadata::api::fingerprints(&public).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(UpKey {
        private: generated,
        public,
        md5,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Register the key for `account` unless it already is.
pub async fn register(meta: &MetadataClient, account: &str, key: &UpKey) -> anyhow::Result<()> {
    if meta.keys(account).await?.iter().any(|k| k.md5 == key.md5) {
        return Ok(());
    }
    let (md5, sha256) =
        mobula_metadata::api::fingerprints(&key.public).map_err(|e| anyhow::anyhow!("{e}"))?;
    meta.add_key(&mobula_metadata::api::AccountKey {
        account: account.into(),
        md5,
        sha256,
        public_key: key.public.clone(),
        created: mobula_metadata::api::now_ms(),
    })
    .await?;
    Ok(())
}

/// The environment block `up` prints (`MOBULA_METADATA_URL` for `mobula account …`,
/// `MOBULA_ADMIN_URL` for `mobula status`).
pub fn environment(url: &str, account: &str, key: &UpKey, metadata: &str, admin: &str) -> String {
    format!(
        "  export MOBULA_URL={url} MOBULA_ACCOUNT={account} MOBULA_KEY={key} \
         MOBULA_METADATA_URL={metadata} MOBULA_ADMIN_URL={admin}\n  \
         export MANTA_URL={url} MANTA_USER={account} MANTA_KEY_ID={md5}",
        key = key.private.display(),
        md5 = key.md5,
    )
}
