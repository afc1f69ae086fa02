//! `mobula up`'s S3 credentials: one access key for its account, kept in `<data>/s3-key`
//! (mode 0600, `ACCESS_KEY SECRET`) so a restart of `up` prints the same one. A key that was
//! removed from the metadata service is replaced by a new one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mobula_metadata::api::S3Key;
use mobula_metadata::MetadataClient;

/// File under the data directory holding `up`'s key.
pub const FILE: &str = "s3-key";

/// The key `up` acts with: the saved one if it still exists, else a new one (saved).
pub async fn find_or_make(
    data: &Path,
    meta: &MetadataClient,
    account: &str,
) -> anyhow::Result<S3Key> {
    let path = data.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((id, secret)) = text.trim().split_once(' ') {
            if let Some(k) = meta.s3_key(id).await? {
                if k.account == account && k.secret == secret {
                    return Ok(k);
                }
            }
        }
    }
    let k = mobula_gateway::s3::keys::generate(account);
    meta.add_s3_key(&k).await?;
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{} {}", k.access_key, k.secret)?;
    f.sync_all()?;
    Ok(k)
}

/// The `AWS_*` environment for `key` against the S3 listener at `url`.
pub fn environment(url: &str, key: &S3Key) -> String {
    format!(
        "  export AWS_ENDPOINT_URL={url} AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} \
         AWS_DEFAULT_REGION=us-east-1",
        key.access_key, key.secret
    )
}
