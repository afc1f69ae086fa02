//! The jobs API (SPEC §4) — `POST /:account/jobs` and `/:account/jobs/:id/live/...`. It only
//! reads and writes job state in metadata and pokes the coordinator; a gateway that does not
//! coordinate serves it just the same. Everything else under `/:account/jobs` (the job
//! directories, outputs, archived records, and `GET /:account/jobs` as the list of jobs) is
//! the storage API.
//!
//! `GET live/status` carries the job's version in `Job-Version`; with `?since=<version>` it
//! waits (at most 10 s, a Mobula extension) until the job's version differs, so a watcher is told
//! of changes without polling: of the job's end at once, of a running job's progress within
//! 50 ms (gathered, so that a busy job's watcher is not answered once per task).

use std::sync::Arc;

use http::{header, Method, Response, StatusCode};
use hyper::body::Incoming;
use mobula_http::{ApiError, Body, Code};
use mobula_jobs::spec::JobSpec;
use mobula_metadata::api::{AddInputs, JobRecords, JobRow, NewJob};

use crate::path::ApiPath;
use crate::Gateway;

const MAX_SPEC: usize = 1 << 20;
/// How long `live/status?since=` waits for a change.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a running job's progress gathers before `live/status?since=` answers (its end, at
/// once): a watcher of a job of many short tasks is answered a few times a second, not once
/// per task.
const STATUS_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);
const MAX_INPUT_BODY: usize = 64 << 20;

/// Is this request for the jobs API (rather than the storage API)?
pub fn is_api(m: &Method, path: &ApiPath) -> bool {
    path.area() == Some("jobs")
        && ((path.depth() == 2 && m == Method::POST)
            || (path.depth() >= 4 && path.parts[3] == "live"))
}

async fn body(b: Incoming, max: usize) -> Result<bytes::Bytes, ApiError> {
    mobula_http::collect_body(b, max, BODY_IDLE).await
}

/// A job or input list body that stalls this long is cut off (`UploadTimeout`).
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

fn text(lines: Vec<String>, content_type: &str) -> Response<Body> {
    let mut s = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    let mut r = Response::new(mobula_http::full(s));
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub async fn route(
    gw: &Arc<Gateway>,
    parts: http::request::Parts,
    b: Incoming,
    path: &ApiPath,
) -> Result<Response<Body>, ApiError> {
    let account = path.account().to_string();
    if path.depth() == 2 {
        return create(gw, &account, b).await;
    }
    let id = path.parts[2].clone();
    let job = job(gw, &account, &id).await?;
    let rest: Vec<&str> = path.parts[4..].iter().map(String::as_str).collect();
    let m = parts.method.clone();
    match (m, rest.as_slice()) {
        (Method::POST, ["in"]) => {
            let end = crate::query(&parts).get("end").map(String::as_str) == Some("true");
            let text = body(b, MAX_INPUT_BODY).await?;
            let text = std::str::from_utf8(&text)
                .map_err(|_| ApiError::new(Code::InvalidArgument, "inputs are not UTF-8"))?;
            let paths: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| match l.strip_prefix("~~") {
                    Some(r) => format!("/{account}{r}"),
                    None => l.to_string(),
                })
                .collect();
            gw.meta
                .job_add_inputs(&AddInputs {
                    id: job.id,
                    paths,
                    end,
                })
                .await?;
            gw.jobs.poke();
            Ok(mobula_http::status(StatusCode::NO_CONTENT))
        }
        (Method::POST, ["in", "end"]) => {
            gw.meta.job_end(&job.id).await?;
            gw.jobs.poke();
            Ok(mobula_http::status(StatusCode::ACCEPTED))
        }
        (Method::POST, ["cancel"]) => {
            gw.meta.job_cancel(&job.id).await?;
            gw.jobs.poke();
            Ok(mobula_http::status(StatusCode::ACCEPTED))
        }
        (Method::GET | Method::HEAD, ["status"]) => {
            // Unchanged, or only moved on since `seen`: the wait answers (progress gathered).
            let job = match crate::query(&parts).get("since") {
                Some(seen) if *seen == job.version() || job.moved_on_from(seen) => gw
                    .meta
                    .job_wait(&job.id, seen, STATUS_WAIT, STATUS_SETTLE)
                    .await?
                    .unwrap_or(job),
                _ => job,
            };
            let mut r = mobula_http::json(StatusCode::OK, &mobula_jobs::status::status(&job));
            if let Ok(v) = job.version().parse() {
                r.headers_mut().insert("job-version", v);
            }
            Ok(r)
        }
        (Method::GET | Method::HEAD, [kind @ ("in" | "out" | "fail" | "err")]) => {
            let lines = records(gw, &job.id, kind).await?;
            let ct = if *kind == "err" {
                "application/x-json-stream; type=job-error"
            } else {
                "text/plain"
            };
            Ok(text(lines, ct))
        }
        (m, _) => Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{m} {} is not part of the jobs API", path.full()),
        )),
    }
}

pub(crate) async fn job(gw: &Gateway, account: &str, id: &str) -> Result<JobRow, ApiError> {
    match gw.meta.job(id).await? {
        Some(j) if j.account == account => Ok(j),
        _ => Err(ApiError::new(Code::JobNotFound, format!("no job {id}"))),
    }
}

pub(crate) async fn records(gw: &Gateway, id: &str, kind: &str) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    loop {
        let page = gw
            .meta
            .job_records(&JobRecords {
                id: id.into(),
                kind: kind.into(),
                from: out.len() as u64,
                limit: 10_000,
            })
            .await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

async fn create(gw: &Arc<Gateway>, account: &str, b: Incoming) -> Result<Response<Body>, ApiError> {
    let b = body(b, MAX_SPEC).await?;
    let id = create_job(gw, account, &b).await?;
    let mut r = mobula_http::status(StatusCode::CREATED);
    if let Ok(v) = format!("/{account}/jobs/{id}").parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// Create a job of `account` from its JSON spec; its id.
pub(crate) async fn create_job(
    gw: &Arc<Gateway>,
    account: &str,
    b: &[u8],
) -> Result<String, ApiError> {
    let spec = JobSpec::parse(b, account)?;
    let id = uuid::Uuid::new_v4().to_string();
    gw.meta
        .job_create(&NewJob {
            id: id.clone(),
            account: account.into(),
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).map_err(ApiError::internal)?,
        })
        .await?;
    gw.jobs.poke();
    Ok(id)
}
