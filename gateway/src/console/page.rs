//! HTML for the console: escaping, links, the page frame, forms and small responses.
//!
//! Invariant: every piece of text that comes from a user or the store (names, paths, metadata,
//! commands, stderr) goes into a page only through [`esc`] (text and attribute values) or
//! [`href`] (paths in links, percent-encoded, then escaped) — an object named
//! `<img src=x onerror=alert(1)>` is shown as those characters, never run.

use std::collections::HashMap;

use http::{header, HeaderValue, Response, StatusCode};
use mobula_http::Body;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::session::Session;

/// Text escaped for HTML content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A store path (`/a/stor/x y`) as the tail of a console URL: each segment percent-encoded.
pub fn enc_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A query value, percent-encoded.
pub fn enc_query(v: &str) -> String {
    utf8_percent_encode(v, SEGMENT).to_string()
}

/// `prefix` followed by `path`, ready for an `href` attribute.
pub fn href(prefix: &str, path: &str) -> String {
    esc(&format!("{prefix}{}", enc_path(path)))
}

/// A whole page: the frame (navigation, sign-out form, CSRF token for scripts) around `body`.
pub fn page(title: &str, s: Option<&Session>, body: &str) -> Response<Body> {
    let nav = match s {
        Some(s) => {
            let a = &s.account;
            format!(
                "<nav><b>Mobula</b> · {acct} · \
                 <a href=\"{stor}\">stor</a> <a href=\"{public}\">public</a> \
                 <a href=\"{buckets}\">buckets</a> <a href=\"/console/jobs\">jobs</a> \
                 <a href=\"/console/cluster\">cluster</a>\
                 <form method=\"post\" action=\"/console/logout\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <button id=\"signout\">Sign out</button></form></nav>",
                acct = esc(a),
                stor = href("/console/browse", &format!("/{a}/stor")),
                public = href("/console/browse", &format!("/{a}/public")),
                buckets = href("/console/browse", &format!("/{a}/buckets")),
                csrf = esc(&s.csrf()),
            )
        }
        None => "<nav><b>Mobula</b></nav>".into(),
    };
    let csrf = s.map(|s| s.csrf()).unwrap_or_default();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"csrf\" content=\"{csrf}\"><title>{title} · Mobula</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">\
         <script src=\"/console/static/console.js\" defer></script></head>\
         <body>{nav}<main><h1>{title}</h1>{body}</main></body></html>",
        csrf = esc(&csrf),
        title = esc(title),
    );
    let mut r = Response::new(mobula_http::full(html));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Only this origin's scripts and styles; no framing (clickjacking), no sniffing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A page with `status`.
pub fn page_with(
    status: StatusCode,
    title: &str,
    s: Option<&Session>,
    body: &str,
) -> Response<Body> {
    let mut r = page(title, s, body);
    *r.status_mut() = status;
    r
}

/// `303 See Other` to `to` (a console path built by the console).
pub fn redirect(to: &str) -> Response<Body> {
    let mut r = mobula_http::status(StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The fields of an `application/x-www-form-urlencoded` body or a query string.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

/// A size for people.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (bytes as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A time (ms since the epoch) as RFC 3339.
pub fn time(ms: i64) -> String {
    crate::headers::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_only_text() {
        let evil = "<img src=x onerror=alert(1)>\"'&";
        assert_eq!(
            esc(evil),
            "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"
        );
        assert_eq!(
            href("/console/browse", "/a/stor/<x> \"y\"/?#"),
            "/console/browse/a/stor/%3Cx%3E%20%22y%22/%3F%23"
        );
        let f = form(b"a=1+2&b=%3Cx%3E&c");
        assert_eq!(f["a"], "1 2");
        assert_eq!(f["b"], "<x>");
        assert_eq!(f["c"], "");
    }
}
