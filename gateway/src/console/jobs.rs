//! Jobs pages: the account's jobs and a form to submit one over the objects under a prefix; a
//! job's live view (per phase: tasks and those done; errors with their stderr inline; outputs
//! with their first bytes), reloaded by `console.js` every 2 s while the job runs.

use std::collections::HashMap;
use std::sync::Arc;

use http::Response;
use mobula_http::{ApiError, Body, Code};
use mobula_metadata::api::{AddInputs, KeyItem, KeyQuery, Kind, ListQuery, SortBy};
use serde_json::{json, Value};

use super::page::{esc, href, page, redirect};
use super::session::Session;
use crate::Gateway;

/// Most inputs a job submitted from the console takes.
const MAX_INPUTS: usize = 100_000;
/// Bytes of an output or a stderr object shown inline.
const PREVIEW: u64 = 16 << 10;
/// Outputs shown inline (the rest are listed).
const PREVIEWED: usize = 10;

pub async fn list(gw: &Arc<Gateway>, s: &Session) -> Result<Response<Body>, ApiError> {
    let mut body = String::from("<form method=\"post\" action=\"/console/jobs\" id=\"job-form\">");
    body.push_str(&format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Name <input name=\"name\" id=\"job-name\"></label>\
         <label>Inputs: every object under <input name=\"prefix\" id=\"job-prefix\" \
         size=\"40\" placeholder=\"/{a}/stor/dir/\"></label>\
         <label>Map <input name=\"map\" id=\"job-map\" size=\"40\" placeholder=\"wc -w\"></label>\
         <label>Reduce (optional) <input name=\"reduce\" id=\"job-reduce\" size=\"40\" \
         placeholder=\"awk '{{s+=$1}} END {{print s}}'\"></label>\
         <button id=\"job-submit\">Run</button></form>",
        esc(&s.csrf()),
        a = esc(&s.account),
    ));
    body.push_str("<h2>Running</h2><ul id=\"running\">");
    for id in gw.meta.jobs_active().await? {
        if let Some(j) = gw.meta.job(&id).await?.filter(|j| j.account == s.account) {
            body.push_str(&format!(
                "<li><a href=\"/console/jobs/{}\">{}</a> {}</li>",
                esc(&j.id),
                esc(&j.id),
                esc(&j.name)
            ));
        }
    }
    body.push_str("</ul><h2>Recent</h2><ul id=\"recent\">");
    let recent = gw
        .meta
        .list(&ListQuery {
            path: format!("/{}/jobs", s.account),
            marker: None,
            limit: 50,
            sort: SortBy::Mtime,
            reverse: false,
        })
        .await?;
    for e in recent.entries.iter().filter(|e| e.kind == Kind::Directory) {
        body.push_str(&format!(
            "<li><a href=\"/console/jobs/{}\">{}</a></li>",
            esc(&e.name),
            esc(&e.name)
        ));
    }
    body.push_str("</ul>");
    Ok(page("Jobs", Some(s), &body))
}

/// Objects under `prefix` (a directory path and a name prefix, or a bucket's key prefix).
async fn inputs(gw: &Arc<Gateway>, s: &Session, prefix: &str) -> Result<Vec<String>, ApiError> {
    let (dir, start) = prefix.rsplit_once('/').ok_or_else(|| {
        ApiError::new(
            Code::InvalidArgument,
            "the input prefix must be a path, /account/…",
        )
    })?;
    let mut out = Vec::new();
    if let Some((bucket, key_prefix)) = prefix.split_once("/objects/") {
        super::readable(gw, s, &super::page::enc_path(bucket)).await?;
        let mut after = None;
        loop {
            let page_ = gw
                .meta
                .list_keys(&KeyQuery {
                    bucket: bucket.to_string(),
                    prefix: key_prefix.to_string(),
                    delimiter: String::new(),
                    start_after: after.take(),
                    limit: 1000,
                })
                .await?;
            for item in &page_.items {
                if let KeyItem::Object(e) = item {
                    out.push(e.path.clone());
                }
            }
            match page_.items.last() {
                Some(last) if page_.truncated && out.len() < MAX_INPUTS => {
                    after = Some(last.marker().to_string())
                }
                _ => break,
            }
        }
    } else {
        super::readable(gw, s, &super::page::enc_path(dir)).await?;
        let mut marker = (!start.is_empty()).then(|| start.to_string());
        'pages: loop {
            let page_ = gw
                .meta
                .list(&ListQuery {
                    path: dir.to_string(),
                    marker: marker.take(),
                    limit: 1001,
                    sort: SortBy::Name,
                    reverse: false,
                })
                .await?;
            let more = page_.entries.len() == 1001;
            for (i, e) in page_.entries.into_iter().enumerate() {
                if !e.name.starts_with(start) || out.len() >= MAX_INPUTS {
                    break 'pages;
                }
                if i == 1000 {
                    marker = Some(e.name);
                    break;
                }
                if e.kind == Kind::Object {
                    out.push(e.path);
                }
            }
            if !more {
                break;
            }
        }
    }
    Ok(out)
}

pub async fn submit(
    gw: &Arc<Gateway>,
    s: &Session,
    f: HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    super::csrf(s, f.get("csrf").map(String::as_str))?;
    let field = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let (map, reduce, prefix) = (field("map"), field("reduce"), field("prefix"));
    if map.is_empty() {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "a job needs a map command",
        ));
    }
    let paths = inputs(gw, s, &prefix).await?;
    if paths.is_empty() {
        return Err(ApiError::new(
            Code::InvalidArgument,
            format!("no object under {prefix}"),
        ));
    }
    let mut phases = vec![json!({"type": "map", "exec": map})];
    if !reduce.is_empty() {
        phases.push(json!({"type": "reduce", "exec": reduce}));
    }
    let spec = json!({"name": field("name"), "phases": phases}).to_string();
    let id = crate::jobs::create_job(gw, &s.account, spec.as_bytes()).await?;
    gw.meta
        .job_add_inputs(&AddInputs {
            id: id.clone(),
            paths,
            end: true,
        })
        .await?;
    gw.jobs.poke();
    Ok(redirect(&format!("/console/jobs/{id}")))
}

pub async fn cancel(
    gw: &Arc<Gateway>,
    s: &Session,
    id: &str,
    f: HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    super::csrf(s, f.get("csrf").map(String::as_str))?;
    let job = crate::jobs::job(gw, &s.account, id).await?;
    gw.meta.job_cancel(&job.id).await?;
    gw.jobs.poke();
    Ok(redirect(&format!("/console/jobs/{}", job.id)))
}

/// Up to [`PREVIEW`] bytes of object `path`, as text.
async fn preview(gw: &Arc<Gateway>, path: &str) -> Option<String> {
    use futures::TryStreamExt;
    let e = gw.meta.get(path).await.ok()??;
    let d = e.data?;
    if d.size == 0 {
        return Some(String::new());
    }
    let end = d.size.min(PREVIEW) - 1;
    let chunks: Vec<bytes::Bytes> = crate::read::data_stream(gw, &d, 0, end)
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&chunks.concat()).into_owned())
}

pub async fn show(gw: &Arc<Gateway>, s: &Session, id: &str) -> Result<Response<Body>, ApiError> {
    let job = crate::jobs::job(gw, &s.account, id).await?;
    let st = mobula_jobs::status::status(&job);
    let running = st["state"] != "done";
    let mut body = format!(
        "<p id=\"state\" data-state=\"{state}\">{state}{cancelled}</p>",
        state = esc(st["state"].as_str().unwrap_or("")),
        cancelled = if st["cancelled"] == true {
            " (cancelled)"
        } else {
            ""
        },
    );
    if running {
        body.push_str(&format!(
            "<div id=\"live\" data-refresh=\"2\"></div>\
             <form method=\"post\" action=\"/console/jobs/{}/cancel\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"cancel\">Cancel</button></form>",
            esc(&job.id),
            esc(&s.csrf())
        ));
    }
    body.push_str(
        "<table id=\"phases\"><tr><th>Phase</th><th>Command</th><th>Tasks</th><th>Done</th></tr>",
    );
    let stats = st["phaseStats"].as_array().cloned().unwrap_or_default();
    for (i, p) in st["phases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ps = stats.get(i).cloned().unwrap_or(Value::Null);
        body.push_str(&format!(
            "<tr><td>{i} {}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(p["type"].as_str().unwrap_or("")),
            esc(p["exec"].as_str().unwrap_or("")),
            ps["tasks"].as_u64().unwrap_or(0),
            ps["tasksDone"].as_u64().unwrap_or(0),
        ));
    }
    body.push_str("</table>");
    body.push_str(&format!(
        "<p id=\"counts\">{} tasks, {} done, {} errors, {} outputs</p>",
        st["stats"]["tasks"],
        st["stats"]["tasksDone"],
        st["stats"]["errors"],
        st["stats"]["outputs"]
    ));
    body.push_str("<h2>Errors</h2><div id=\"errors\">");
    for line in crate::jobs::records(gw, &job.id, "err").await? {
        let e: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        body.push_str(&format!(
            "<div class=\"error-record\"><p>{}: {} — {}</p>",
            esc(e["what"].as_str().unwrap_or("")),
            esc(e["code"].as_str().unwrap_or("")),
            esc(e["message"].as_str().unwrap_or(""))
        ));
        if let Some(p) = e["stderr"].as_str() {
            let text = preview(gw, p).await.unwrap_or_default();
            body.push_str(&format!("<pre class=\"stderr\">{}</pre>", esc(&text)));
        }
        body.push_str("</div>");
    }
    body.push_str("</div><h2>Outputs</h2><div id=\"outputs\">");
    for (i, out) in crate::jobs::records(gw, &job.id, "out")
        .await?
        .iter()
        .enumerate()
    {
        body.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            href("/console/browse", out),
            esc(out)
        ));
        if i < PREVIEWED {
            let text = preview(gw, out).await.unwrap_or_default();
            body.push_str(&format!("<pre class=\"output\">{}</pre>", esc(&text)));
        }
    }
    body.push_str("</div>");
    Ok(page(&format!("Job {}", job.id), Some(s), &body))
}
