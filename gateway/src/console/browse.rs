//! Browsing pages: a directory or bucket a page at a time, the buckets of an account, and one
//! object's details. Writes (upload, delete, new directory or bucket, snaplink) are made by
//! `console.js` through `/console/api/`; these pages carry what it needs in `data-` attributes.

use std::sync::Arc;

use http::Response;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{Entry, KeyItem, KeyQuery, Kind, ListQuery};

use super::page::{enc_query, esc, form, href, page, redirect, size, time};
use super::session::Session;
use crate::Gateway;

/// Entries on one page.
pub const PAGE: u32 = 200;

/// The page for store path `raw` (percent-encoded, as in the URL).
pub async fn show(
    gw: &Arc<Gateway>,
    s: &Session,
    raw: &str,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let p = super::readable(gw, s, raw).await?;
    let q = form(query.unwrap_or("").as_bytes());
    let full = p.full();
    if p.depth() == 1 {
        return Ok(redirect(&format!("/console/browse/{}/stor", p.account())));
    }
    if p.area() == Some("buckets") && p.depth() == 3 {
        return bucket(gw, s, &full, &q).await;
    }
    let entry =
        gw.meta.get(&full).await?.ok_or_else(|| {
            ApiError::new(Code::ResourceNotFound, format!("{full} does not exist"))
        })?;
    match entry.kind {
        Kind::Directory => directory(gw, s, &entry, &q).await,
        Kind::Object => Ok(object(gw, s, &entry)),
    }
}

/// A breadcrumb trail of `path`'s directories.
fn crumbs(path: &str) -> String {
    let mut out = String::from("<p class=\"crumbs\">");
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        out.push_str(&format!(
            "/<a href=\"{}\">{}</a>",
            href("/console/browse", &at),
            esc(part)
        ));
    }
    out.push_str("</p>");
    out
}

fn row(e: &Entry, name: &str) -> String {
    let (kind, sz) = match (&e.kind, &e.data) {
        (Kind::Directory, _) => ("directory", format!("{} entries", e.children)),
        (Kind::Object, Some(d)) => ("object", size(d.size)),
        (Kind::Object, None) => ("object", String::new()),
    };
    format!(
        "<tr class=\"entry\"><td><a class=\"name\" href=\"{link}\">{name}</a></td><td>{kind}</td>\
         <td>{sz}</td><td>{mtime}</td><td><button class=\"delete\" data-path=\"{path}\" \
         data-kind=\"{kind}\">Delete</button></td></tr>",
        link = href("/console/browse", &e.path),
        name = esc(name),
        mtime = esc(&time(e.mtime)),
        path = esc(&e.path),
    )
}

/// The upload zone for a place where new names go under `target`.
fn upload_zone(target: &str) -> String {
    format!(
        "<div id=\"drop\" data-dir=\"{}\">Drop files here, or <input type=\"file\" \
         id=\"files\" multiple> <progress id=\"progress\" max=\"1\" value=\"0\" hidden>\
         </progress> <span id=\"upload-status\"></span></div>",
        esc(target),
    )
}

/// A name field and a button making a new `kind` (directory, bucket) under `target`.
fn new_control(target: &str, kind: &str, label: &str) -> String {
    format!(
        "<p><input id=\"new-name\" placeholder=\"{kind} name\"> <button id=\"new\" \
         data-dir=\"{}\" data-kind=\"{kind}\">{label}</button></p>",
        esc(target),
    )
}

async fn directory(
    gw: &Arc<Gateway>,
    s: &Session,
    dir: &Entry,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let marker = q.get("marker").filter(|m| !m.is_empty()).cloned();
    let mut page_ = gw
        .meta
        .list(&ListQuery {
            path: dir.path.clone(),
            marker,
            limit: PAGE + 1,
            sort: Default::default(),
            reverse: false,
        })
        .await?;
    let next = (page_.entries.len() > PAGE as usize).then(|| page_.entries.pop());
    let buckets_area = dir.path.split('/').nth(2) == Some("buckets");
    let mut body = crumbs(&dir.path);
    body.push_str(&format!("<p id=\"total\">{} entries</p>", page_.total));
    let own = dir.path.split('/').nth(1) == Some(s.account.as_str());
    if own {
        if buckets_area {
            // New names here are buckets; nothing is uploaded outside one.
            body.push_str(&new_control(&dir.path, "bucket", "New bucket"));
        } else {
            body.push_str(&upload_zone(&dir.path));
            body.push_str(&new_control(&dir.path, "directory", "New directory"));
        }
    }
    body.push_str("<table id=\"listing\"><tr><th>Name</th><th>Type</th><th>Size</th><th>Modified</th><th></th></tr>");
    for e in &page_.entries {
        body.push_str(&row(e, &e.name));
    }
    body.push_str("</table>");
    if let Some(Some(n)) = next {
        body.push_str(&format!(
            "<p><a id=\"next\" href=\"{}?marker={}\">Next page</a></p>",
            href("/console/browse", &dir.path),
            esc(&enc_query(&n.name))
        ));
    }
    Ok(page(&dir.path, Some(s), &body))
}

async fn bucket(
    gw: &Arc<Gateway>,
    s: &Session,
    full: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let after = q.get("after").filter(|a| !a.is_empty()).cloned();
    let keys = gw
        .meta
        .list_keys(&KeyQuery {
            bucket: full.to_string(),
            prefix: prefix.clone(),
            delimiter: "/".into(),
            start_after: after,
            limit: PAGE,
        })
        .await?;
    let mut body = crumbs(full);
    if !prefix.is_empty() {
        body.push_str(&format!("<p>Keys under <code>{}</code></p>", esc(&prefix)));
    }
    let objects = format!("{full}/objects/{prefix}");
    if full.split('/').nth(1) == Some(s.account.as_str()) {
        body.push_str(&upload_zone(&objects));
    }
    body.push_str("<table id=\"listing\"><tr><th>Key</th><th>Type</th><th>Size</th><th>Modified</th><th></th></tr>");
    for item in &keys.items {
        match item {
            KeyItem::Object(e) => {
                let key = e.path.splitn(6, '/').nth(5).unwrap_or(&e.name);
                body.push_str(&row(e, key));
            }
            KeyItem::Prefix(p) => body.push_str(&format!(
                "<tr class=\"entry\"><td><a class=\"name\" href=\"{}?prefix={}\">{}</a></td>\
                 <td>prefix</td><td></td><td></td><td></td></tr>",
                href("/console/browse", full),
                esc(&enc_query(p)),
                esc(p)
            )),
        }
    }
    body.push_str("</table>");
    if let (true, Some(last)) = (keys.truncated, keys.items.last()) {
        body.push_str(&format!(
            "<p><a id=\"next\" href=\"{}?prefix={}&amp;after={}\">Next page</a></p>",
            href("/console/browse", full),
            esc(&enc_query(&prefix)),
            esc(&enc_query(last.marker()))
        ));
    }
    Ok(page(full, Some(s), &body))
}

fn object(gw: &Gateway, s: &Session, e: &Entry) -> Response<Body> {
    let mut body = crumbs(&e.path);
    body.push_str("<table id=\"details\">");
    let mut line = |k: &str, v: &str| {
        body.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)));
    };
    line("Type", &e.content_type);
    line("Modified", &time(e.mtime));
    if let Some(d) = &e.data {
        line("Size", &format!("{} ({} bytes)", size(d.size), d.size));
        line("ETag", &d.id);
        line("MD5", &d.md5);
        line("Copies wanted", &d.durability.to_string());
        let held: Vec<String> = d
            .nodes
            .iter()
            .map(|n| match gw.nodes.url(n) {
                Some(u) => format!("{n} ({u})"),
                None => n.clone(),
            })
            .collect();
        line("Copies on", &held.join(", "));
    }
    for (k, v) in &e.headers {
        line(k, v);
    }
    body.push_str("</table>");
    body.push_str(&format!(
        "<p><a id=\"download\" href=\"{}\" download>Download</a> \
         <button class=\"delete\" data-path=\"{}\" data-kind=\"object\">Delete</button></p>",
        href("/console/api", &e.path),
        esc(&e.path)
    ));
    if e.path.split('/').nth(1) == Some(s.account.as_str()) {
        body.push_str(&format!(
            "<p><input id=\"link-to\" placeholder=\"/{}/stor/new-name\"> \
             <button id=\"snaplink\" data-path=\"{}\">Make a snaplink</button></p>",
            esc(&s.account),
            esc(&e.path)
        ));
    }
    page(&e.name, Some(s), &body)
}
