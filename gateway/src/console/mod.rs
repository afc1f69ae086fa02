//! The web console at `/console/` (the account name `console` is reserved for it): server-
//! rendered pages with a little JavaScript (`console.js`, served from here; no build step).
//!
//! - Sign-in with an account's S3 access key and secret; a signed session cookie
//!   ([`session`]), CSRF tokens on every write.
//! - Browsing `stor`, `public` and buckets a page at a time (directories of any size: each
//!   page is one index range scan from its marker), object details, download, upload (drag and
//!   drop with a progress bar; large files as a multipart upload), delete, new directory or
//!   bucket, snaplink (`browse`).
//! - Jobs: submit a map/reduce job over the objects under a prefix, a live view of each, its
//!   outputs and error records with their stderr inline (`jobs`).
//! - The cluster: nodes, space, health, running tasks, repairs, small charts (`cluster`).
//!
//! Every store operation a page or script performs goes through `/console/api/<Manta path>`:
//! the gateway's own storage and jobs API, as the signed-in account, with the same
//! authorization as a signed request (writes also need the CSRF token). Pages read the
//! namespace through the metadata service after the same authorization check.

mod browse;
mod cluster;
mod jobs;
mod page;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code};

use crate::auth::{authorize, Caller};
use crate::path::ApiPath;
use crate::s3::keys::Keys;
use crate::Gateway;
pub use cluster::History;
use page::{esc, page_with, redirect};
use session::Session;

/// The console's state in a gateway: access keys (cached lookups) and the charts' history.
#[derive(Debug)]
pub struct Console {
    keys: Keys,
    pub history: History,
}

impl Console {
    pub fn new(meta: mobula_metadata::MetadataClient) -> Console {
        Console {
            keys: Keys::new(meta),
            history: History::default(),
        }
    }
}

/// Whether `path` is the console's.
pub fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

const JS: &str = include_str!("console.js");
const CSS: &str = include_str!("console.css");
/// Largest form a page posts.
const MAX_FORM: usize = 64 << 10;

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(mobula_http::full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

async fn read_form(body: Incoming) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let b = mobula_http::collect_body(body, MAX_FORM, Duration::from_secs(30)).await?;
    Ok(page::form(&b))
}

/// Serve a console request.
pub async fn route(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let path = parts.uri.path().to_string();
    let rest = path.strip_prefix("/console").unwrap_or("");
    let m = parts.method.clone();
    match (&m, rest) {
        (&Method::GET, "/static/console.js") => return asset(JS, "text/javascript"),
        (&Method::GET, "/static/console.css") => return asset(CSS, "text/css"),
        (&Method::GET, "/login") => return login_page(StatusCode::OK, ""),
        (&Method::POST, "/login") => return login(gw, body).await,
        _ => {}
    }
    let Some(s) = Session::from_headers(&gw.console.keys, &parts.headers).await else {
        if rest.starts_with("/api/") {
            return ApiError::new(Code::AuthorizationRequired, "sign in to the console first")
                .into_response();
        }
        return redirect("/console/login");
    };
    let r = pages(gw, &s, parts, body, rest).await;
    r.unwrap_or_else(|e| error_page(&s, e))
}

/// The pages behind the session check.
async fn pages(
    gw: &Arc<Gateway>,
    s: &Session,
    parts: http::request::Parts,
    body: Incoming,
    rest: &str,
) -> Result<Response<Body>, ApiError> {
    let m = parts.method.clone();
    let s = s.clone();
    let path = parts.uri.path().to_string();
    match (&m, rest) {
        (_, "" | "/") => Ok(redirect(&format!("/console/browse/{}/stor", s.account))),
        (&Method::POST, "/logout") => logout(&s, body).await,
        (_, r) if r.starts_with("/api/") => api(gw, &s, parts, body).await,
        (&Method::GET, r) if r.starts_with("/browse/") => {
            browse::show(gw, &s, &r["/browse".len()..], parts.uri.query()).await
        }
        (&Method::GET, "/jobs") => jobs::list(gw, &s).await,
        (&Method::POST, "/jobs") => jobs::submit(gw, &s, read_form(body).await?).await,
        (&Method::GET, r) if r.starts_with("/jobs/") => jobs::show(gw, &s, &r[6..]).await,
        (&Method::POST, r) if r.starts_with("/jobs/") && r.ends_with("/cancel") => {
            let id = &r[6..r.len() - "/cancel".len()];
            jobs::cancel(gw, &s, id, read_form(body).await?).await
        }
        (&Method::GET, "/cluster") => cluster::show(gw, &s).await,
        _ => Err(ApiError::new(
            Code::ResourceNotFound,
            format!("{path} is not a console page"),
        )),
    }
}

/// A failed page: its status, and the error as text.
fn error_page(s: &Session, e: ApiError) -> Response<Body> {
    let status = e.status();
    let body = format!(
        "<p class=\"error\" id=\"error\">{}: {}</p>",
        esc(e.code.as_str()),
        esc(&e.message)
    );
    page_with(status, "Error", Some(s), &body)
}

fn login_page(status: StatusCode, message: &str) -> Response<Body> {
    let note = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(message))
    };
    let body = format!(
        "{note}<form method=\"post\" action=\"/console/login\" id=\"login\">\
         <label>Access key <input name=\"access_key\" id=\"access_key\" autocomplete=\"username\"></label>\
         <label>Secret <input name=\"secret\" id=\"secret\" type=\"password\" \
         autocomplete=\"current-password\"></label>\
         <button id=\"signin\">Sign in</button></form>\
         <p>Use an S3 access key of your account (<code>mobula account s3-key create NAME</code>; \
         <code>mobula up</code> prints one).</p>"
    );
    page_with(status, "Sign in", None, &body)
}

async fn login(gw: &Arc<Gateway>, body: Incoming) -> Response<Body> {
    let f = match read_form(body).await {
        Ok(f) => f,
        Err(e) => return login_page(e.status(), &e.message),
    };
    let (key, secret) = (
        f.get("access_key").map(|s| s.trim()).unwrap_or(""),
        f.get("secret").map(String::as_str).unwrap_or(""),
    );
    let found = match gw.console.keys.get(key).await {
        Ok(k) if !key.is_empty() && session_secret_matches(&k.secret, secret) => Some(k),
        _ => None,
    };
    let Some(k) = found else {
        return login_page(StatusCode::UNAUTHORIZED, "Wrong access key or secret.");
    };
    let s = Session::new(&k.access_key, &k.account, &k.secret);
    let mut r = redirect(&format!("/console/browse/{}/stor", k.account));
    if let Ok(v) = HeaderValue::from_str(&s.set_cookie(gw.cfg.tls.is_some())) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn session_secret_matches(want: &str, given: &str) -> bool {
    want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

async fn logout(s: &Session, body: Incoming) -> Result<Response<Body>, ApiError> {
    let f = read_form(body).await?;
    csrf(s, f.get("csrf").map(String::as_str))?;
    let mut r = redirect("/console/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Refuse a write without the session's CSRF token.
fn csrf(s: &Session, given: Option<&str>) -> Result<(), ApiError> {
    if s.csrf_ok(given) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::AuthorizationFailed,
            "this write did not come from a console page (missing or wrong CSRF token)",
        ))
    }
}

/// `/console/api/<Manta path>`: the storage and jobs API as the session's account.
async fn api(
    gw: &Arc<Gateway>,
    s: &Session,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        csrf(s, token)?;
    }
    let raw = &parts.uri.path()["/console/api".len()..];
    let target = match parts.uri.query() {
        Some(q) => format!("{raw}?{q}"),
        None => raw.to_string(),
    };
    parts.uri = target
        .parse()
        .map_err(|_| ApiError::new(Code::InvalidResource, "bad path"))?;
    let path = ApiPath::parse(parts.uri.path())?;
    gw.check_account(path.account()).await?;
    let caller = Caller {
        account: Some(s.account.clone()),
    };
    authorize(&caller, &parts.method, &path)?;
    crate::dispatch(gw, parts, body, path).await
}

/// The path of a page's store path, checked for reading by the session's account.
async fn readable(gw: &Gateway, s: &Session, path: &str) -> Result<ApiPath, ApiError> {
    let p = ApiPath::parse(path)?;
    gw.check_account(p.account()).await?;
    let caller = Caller {
        account: Some(s.account.clone()),
    };
    authorize(&caller, &Method::GET, &p)?;
    Ok(p)
}

/// Keep sampling the cluster for the charts while the gateway runs.
pub async fn sample_loop(gw: Arc<Gateway>) {
    loop {
        gw.console.history.sample(&gw).await;
        tokio::time::sleep(cluster::SAMPLE_EVERY).await;
    }
}
