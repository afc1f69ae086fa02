//! The authentication seam: who is making a request, and whether they may do it.
//!
//! An [`Authenticator`] turns a request into a [`Caller`]; [`authorize`] decides. Until
//! signature checking lands (its own issue), [`TrustPathAccount`] makes every request act as
//! the account named in its path.

use futures::future::BoxFuture;
use http::Method;
use mobula_http::{ApiError, Code};

use crate::path::ApiPath;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated account; `None` for an anonymous request.
    pub account: Option<String>,
}

/// Authenticates requests.
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Who sent a request with these `parts` for `path`.
    fn authenticate<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        path: &'a ApiPath,
    ) -> BoxFuture<'a, Result<Caller, ApiError>>;
}

/// Pre-authentication behaviour: the caller is the account in the path.
#[derive(Debug, Default)]
pub struct TrustPathAccount;

impl Authenticator for TrustPathAccount {
    fn authenticate<'a>(
        &'a self,
        _parts: &'a http::request::Parts,
        path: &'a ApiPath,
    ) -> BoxFuture<'a, Result<Caller, ApiError>> {
        Box::pin(async move {
            Ok(Caller {
                account: Some(path.account().to_string()),
            })
        })
    }
}

/// May `caller` do `method` on `path`? Owners may do anything; anyone may read `/public`.
pub fn authorize(caller: &Caller, method: &Method, path: &ApiPath) -> Result<(), ApiError> {
    if caller.account.as_deref() == Some(path.account()) {
        return Ok(());
    }
    if (method == Method::GET || method == Method::HEAD) && path.area() == Some("public") {
        return Ok(());
    }
    match caller.account {
        None => Err(ApiError::new(
            Code::AuthorizationRequired,
            "this request needs authentication",
        )),
        Some(_) => Err(ApiError::new(
            Code::AuthorizationFailed,
            format!("no access to {}", path.full()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_public_readers() {
        let p = ApiPath::parse("/alice/public/x").unwrap();
        let s = ApiPath::parse("/alice/stor/x").unwrap();
        let anon = Caller { account: None };
        let bob = Caller {
            account: Some("bob".into()),
        };
        let alice = Caller {
            account: Some("alice".into()),
        };
        assert!(authorize(&anon, &Method::GET, &p).is_ok());
        assert!(authorize(&anon, &Method::PUT, &p).is_err());
        assert_eq!(
            authorize(&anon, &Method::GET, &s).unwrap_err().code,
            Code::AuthorizationRequired
        );
        assert_eq!(
            authorize(&bob, &Method::GET, &s).unwrap_err().code,
            Code::AuthorizationFailed
        );
        assert!(authorize(&alice, &Method::DELETE, &s).is_ok());
    }
}
