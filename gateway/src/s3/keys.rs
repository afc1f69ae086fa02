//! S3 access keys: generating them, and finding the account and secret of a request's key.
//!
//! An access key acts exactly as its account. Lookups are cached for [`KEY_CACHE`], so a removed
//! key stops working within that time on every gateway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mobula_metadata::api::S3Key;
use mobula_metadata::MetadataClient;
use rand::Rng;
use s3s::auth::{Credentials, S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

use super::convert::s3_err;

/// How long a key lookup is trusted.
pub const KEY_CACHE: Duration = Duration::from_secs(5);

/// A new random key pair for `account`: a 20-character access key id (`MB` and 18 of
/// `[A-Z0-9]`) and a 40-character secret (`[A-Za-z0-9+/]`), both from the OS's CSPRNG.
pub fn generate(account: &str) -> S3Key {
    let mut rng = rand::rngs::OsRng;
    let pick = |rng: &mut rand::rngs::OsRng, set: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| set[rng.gen_range(0..set.len())] as char)
            .collect()
    };
    let upper = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let any = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    S3Key {
        access_key: format!("MB{}", pick(&mut rng, upper, 18)),
        account: account.to_string(),
        secret: pick(&mut rng, any, 40),
        created: mobula_metadata::api::now_ms(),
    }
}

/// Access keys, looked up in the metadata service and cached briefly.
#[derive(Debug)]
pub struct Keys {
    meta: MetadataClient,
    cache: Mutex<HashMap<String, (S3Key, Instant)>>,
}

impl Keys {
    pub fn new(meta: MetadataClient) -> Keys {
        Keys {
            meta,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key `access_key`, or `InvalidAccessKeyId`.
    pub async fn get(&self, access_key: &str) -> S3Result<S3Key> {
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, at)) = c.get(access_key) {
                if at.elapsed() < KEY_CACHE {
                    return Ok(k.clone());
                }
            }
        }
        let k = self
            .meta
            .s3_key(access_key)
            .await
            .map_err(s3_err)?
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(access_key.to_string(), (k.clone(), Instant::now()));
        Ok(k)
    }

    /// The account a request acts as (s3s has already verified its signature).
    pub async fn account(&self, creds: &Option<Credentials>) -> S3Result<String> {
        let c = creds.as_ref().ok_or_else(|| s3_error!(AccessDenied))?;
        Ok(self.get(&c.access_key).await?.account)
    }
}

/// The SigV4 secret lookup s3s calls for every signed request.
#[derive(Debug)]
pub struct KeyAuth(pub std::sync::Arc<Keys>);

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        Ok(SecretKey::from(self.0.get(access_key).await?.secret))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let a = super::generate("acct");
        let b = super::generate("acct");
        assert_ne!(a.access_key, b.access_key);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.access_key.len(), 20);
        assert!(a.access_key.starts_with("MB"));
        assert_eq!(a.secret.len(), 40);
        assert_eq!(a.account, "acct");
    }
}
