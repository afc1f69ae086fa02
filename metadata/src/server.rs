//! The metadata service's HTTP server: `POST /rpc/<method>` with a JSON body, JSON answer.
//!
//! Every method runs on a blocking thread against [`Db`]; writes are one transaction each.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use mobula_http::{ApiError, Body, Code, Request};

use crate::error::Error;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::api::*;
use crate::db::Db;
use crate::job_watch::JobWatch;
use crate::{buckets, jobs, keys, namespace, registry, repairs, uploads};

const MAX_BODY: usize = 16 << 20;

/// Arguments of methods that take only a name or a path.
#[derive(Debug, Serialize, Deserialize)]
pub struct Name {
    pub name: String,
}

/// Arguments of `garbage.list`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Limit {
    pub limit: u32,
}

/// Arguments of `repair.claim`: at most `limit` repairs, each claimed for `lease_ms`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub limit: u32,
    pub lease_ms: i64,
}

/// Arguments of `repair.release`: the repair (its data and lost copy's node), and how long
/// until any gateway may take it again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Release {
    pub copy: Copy,
    pub retry_ms: i64,
}

/// Arguments of methods that take a list of data ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ids {
    pub ids: Vec<String>,
}

/// Arguments of `data.on_node`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OnNode {
    pub node: String,
    pub after: String,
    pub limit: u32,
}

/// Arguments of `repair.done`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Repaired {
    pub lost_on: String,
    pub copy: Copy,
}

/// Serve the metadata API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    db: Arc<Db>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // What `job.wait` sleeps on.
    let changes = JobWatch::new();
    // Clients in this process call straight in while this serves (`crate::local`).
    let _local = listener.local_addr().ok().map(|a| {
        let l = crate::local::Local {
            db: db.clone(),
            changes: changes.clone(),
        };
        crate::local::register(&format!("http://{a}"), Arc::new(l))
    });
    let limits = mobula_http::Limits {
        api: Some("metadata"),
        ..Default::default()
    };
    mobula_http::serve_with(
        listener,
        None,
        move |req| handle(db.clone(), changes.clone(), req),
        shutdown,
        Duration::from_secs(5),
        limits,
    )
    .await
}

async fn handle(db: Arc<Db>, changes: Arc<JobWatch>, req: Request) -> http::Response<Body> {
    let started = std::time::Instant::now();
    let op = match req.uri().path() {
        "/ping" => "ping",
        p => p.strip_prefix("/rpc/").map_or("invalid", method_name),
    };
    let resp = match mobula_http::reqid::from_headers(req.headers()) {
        Some(id) => {
            let r = mobula_http::reqid::scope(id, async move {
                let r = answer(route(db, changes, req).await);
                tracing::debug!("metadata {op}: {}", r.status());
                r
            });
            r.await
        }
        None => answer(route(db, changes, req).await),
    };
    mobula_http::telemetry::request("metadata", op, resp.status(), started);
    resp
}

/// Every RPC method, for the request metrics (anything else is `unknown`).
const METHODS: &[&str] = &[
    "account.create",
    "account.exists",
    "account.list",
    "key.add",
    "key.list",
    "key.get",
    "key.remove",
    "s3key.add",
    "s3key.list",
    "s3key.get",
    "s3key.remove",
    "entry.get",
    "entry.mkdir",
    "entry.put_object",
    "entry.put_link",
    "entry.update_metadata",
    "entry.delete",
    "entry.list",
    "bucket.create",
    "bucket.delete",
    "bucket.list",
    "node.heartbeat",
    "node.list",
    "cluster.summary",
    "node.set_state",
    "node.evacuate",
    "node.copies",
    "node.remove",
    "garbage.list",
    "garbage.done",
    "garbage.queue",
    "data.known",
    "data.on_node",
    "data.bad",
    "repair.list",
    "repair.claim",
    "repair.release",
    "repair.done",
    "upload.create",
    "upload.get",
    "upload.put_part",
    "upload.commit",
    "upload.list",
    "upload.abort",
    "job.create",
    "job.get",
    "job.active",
    "job.add_inputs",
    "job.end",
    "job.cancel",
    "job.wait",
    "job.records",
    "job.log",
    "lease.take",
];

/// `method` as a name from [`METHODS`], or `unknown`.
pub(crate) fn method_name(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("unknown")
}

/// The response of a method's outcome (an error as its JSON `{code, message}`).
pub(crate) fn answer(r: Result<http::Response<Body>, ApiError>) -> http::Response<Body> {
    match r {
        Ok(resp) => resp,
        Err(e) => {
            if e.code == Code::InternalError {
                tracing::error!("metadata: {e}");
            }
            e.into_response()
        }
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidArgument, format!("bad request body: {e}")))
}

/// Run `f` off the runtime; its [`Error`] becomes the wire error here, at the edge.
async fn blocking<T: Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<http::Response<Body>, ApiError> {
    let out = tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)??;
    Ok(mobula_http::json(StatusCode::OK, &out))
}

async fn route(
    db: Arc<Db>,
    changes: Arc<JobWatch>,
    req: Request,
) -> Result<http::Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/ping" {
        return Ok(mobula_http::status(StatusCode::OK));
    }
    let Some(method) = path.strip_prefix("/rpc/").map(str::to_string) else {
        return Err(ApiError::new(
            Code::ResourceNotFound,
            format!("no route {path}"),
        ));
    };
    if req.method() != Method::POST {
        return Err(ApiError::new(Code::MethodNotAllowed, "use POST"));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::new(Code::InvalidArgument, format!("reading body: {e}")))?
        .to_bytes();
    dispatch(db, changes, &method, body).await
}

/// `job.log` (over HTTP and typed in this process, [`crate::local::Local::job_log`]): one
/// grouped write, then the job's watchers woken — at once when it is done.
pub(crate) async fn job_log(db: &Arc<Db>, changes: &JobWatch, a: JobAppend) -> Result<(), Error> {
    let (id, done) = (a.id.clone(), a.state == "done");
    db.write_grouped(move |tx| jobs::log(tx, &a)).await?;
    changes.wrote(&id, done, done);
    Ok(())
}

/// Run RPC `method` with its JSON arguments `body`.
pub(crate) async fn dispatch(
    db: Arc<Db>,
    changes: Arc<JobWatch>,
    method: &str,
    body: Bytes,
) -> Result<http::Response<Body>, ApiError> {
    macro_rules! write {
        ($ty:ty, |$tx:ident, $a:ident| $e:expr) => {{
            let $a: $ty = parse(&body)?;
            let out = db.write_grouped(move |$tx| $e).await?;
            Ok(mobula_http::json(StatusCode::OK, &out))
        }};
    }
    // A write to job `$a.$id` wakes its watchers once committed; `$wake` is (tell it at once,
    // the job is done), read from the arguments `$a`.
    macro_rules! job_write {
        ($ty:ty, |$tx:ident, $a:ident| $e:expr, $id:ident, $wake:expr) => {{
            let $a: $ty = parse(&body)?;
            let id = $a.$id.clone();
            let (prompt, done): (bool, bool) = $wake;
            let out = db.write_grouped(move |$tx| $e).await?;
            changes.wrote(&id, prompt, done);
            Ok(mobula_http::json(StatusCode::OK, &out))
        }};
    }
    macro_rules! read {
        ($ty:ty, |$c:ident, $a:ident| $e:expr) => {{
            let $a: $ty = parse(&body)?;
            blocking(move || db.read(|$c| $e)).await
        }};
    }
    match method {
        "account.create" => write!(Name, |tx, a| namespace::create_account(tx, &a.name)),
        "account.exists" => read!(Name, |c, a| namespace::account_exists(c, &a.name)),
        "account.list" => read!((), |c, _a| namespace::accounts(c)),
        "key.add" => write!(AccountKey, |tx, a| keys::add(tx, &a)),
        "key.list" => read!(Name, |c, a| keys::list(c, &a.name)),
        "key.get" => read!(KeyRef, |c, a| keys::get(c, &a)),
        "key.remove" => write!(KeyRef, |tx, a| keys::remove(tx, &a)),
        "s3key.add" => write!(S3Key, |tx, a| keys::s3_add(tx, &a)),
        "s3key.list" => read!(Name, |c, a| keys::s3_list(c, &a.name)),
        "s3key.get" => read!(Name, |c, a| keys::s3_get(c, &a.name)),
        "s3key.remove" => write!(KeyRef, |tx, a| keys::s3_remove(tx, &a)),
        // Every GET and HEAD asks this first: run it in place when it cannot wait.
        "entry.get" => {
            let a: Name = parse(&body)?;
            match db.entry_now(&a.name) {
                Some(out) => Ok(mobula_http::json(StatusCode::OK, &out?)),
                None => blocking(move || db.entry(&a.name)).await,
            }
        }
        "entry.mkdir" => write!(Name, |tx, a| namespace::mkdir(tx, &a.name)),
        "entry.put_object" => {
            let a: PutObject = parse(&body)?;
            Ok(mobula_http::json(StatusCode::OK, &db.put_object(&a).await?))
        }
        "entry.put_link" => write!(PutLink, |tx, a| namespace::put_link(tx, &a)),
        "entry.update_metadata" => {
            write!(UpdateMetadata, |tx, a| namespace::update_metadata(tx, &a))
        }
        "entry.delete" => write!(DeleteEntry, |tx, a| namespace::delete(tx, &a)),
        "entry.list" => read!(ListQuery, |c, a| namespace::list(c, &a)),
        "bucket.create" => write!(Name, |tx, a| buckets::create(tx, &a.name)),
        "bucket.delete" => write!(Name, |tx, a| buckets::delete(tx, &a.name)),
        "bucket.list" => read!(KeyQuery, |c, a| buckets::list(c, &a)),
        "node.heartbeat" => write!(Heartbeat, |tx, a| registry::heartbeat(tx, &a)),
        "node.list" => read!((), |c, _a| registry::nodes(c)),
        "cluster.summary" => read!((), |c, _a| registry::summary(c)),
        "node.set_state" => write!(NodeState, |tx, a| registry::set_state(tx, &a)),
        "node.evacuate" => write!(Evacuate, |tx, a| registry::evacuate(tx, &a)),
        "node.copies" => read!(Name, |c, a| registry::copies_on(c, &a.name)),
        "node.remove" => write!(Name, |tx, a| registry::remove(tx, &a.name)),
        "garbage.list" => read!(Limit, |c, a| registry::garbage(c, a.limit)),
        "garbage.done" => write!(Ids, |tx, a| registry::garbage_done(tx, &a.ids)),
        "garbage.queue" => write!(Garbage, |tx, a| registry::queue_garbage(tx, &a)),
        "data.known" => read!(Ids, |c, a| registry::known_data(c, &a.ids)),
        "data.on_node" => read!(OnNode, |c, a| registry::data_on_node(
            c, &a.node, &a.after, a.limit
        )),
        "data.bad" => write!(Copy, |tx, a| registry::report_bad(tx, &a)),
        "repair.list" => read!(Limit, |c, a| repairs::repairs(c, a.limit)),
        "repair.claim" => write!(Claim, |tx, a| repairs::claim(tx, a.limit, a.lease_ms)),
        "repair.release" => write!(Release, |tx, a| repairs::release(tx, &a.copy, a.retry_ms)),
        "repair.done" => write!(Repaired, |tx, a| repairs::repaired(tx, &a.lost_on, &a.copy)),
        "upload.create" => write!(Upload, |tx, a| uploads::create(tx, &a)),
        "upload.get" => read!(Name, |c, a| uploads::get(c, &a.name)),
        "upload.put_part" => write!(PutPart, |tx, a| uploads::put_part(tx, &a)),
        "upload.commit" => write!(CommitUpload, |tx, a| uploads::commit(tx, &a)),
        "upload.list" => read!(UploadQuery, |c, a| uploads::list(c, &a)),
        "upload.abort" => write!(Name, |tx, a| uploads::abort(tx, &a.name)),
        "job.create" => write!(NewJob, |tx, a| jobs::create(tx, &a)), // nobody waits on it yet
        "job.get" => read!(Name, |c, a| jobs::get(c, &a.name)),
        "job.active" => read!((), |c, _a| jobs::active(c)),
        "job.add_inputs" => job_write!(
            AddInputs,
            |tx, a| jobs::add_inputs(tx, &a),
            id,
            (true, false)
        ),
        "job.end" => job_write!(Name, |tx, a| jobs::end(tx, &a.name), name, (true, false)),
        "job.cancel" => job_write!(Name, |tx, a| jobs::cancel(tx, &a.name), name, (true, false)),
        "job.wait" => {
            let row = changes.wait(db, parse(&body)?).await?;
            Ok(mobula_http::json(StatusCode::OK, &row))
        }
        "job.records" => read!(JobRecords, |c, a| jobs::records(c, &a)),
        // A running job's progress (gathered for its watchers); its end, told at once.
        "job.log" => {
            job_log(&db, &changes, parse(&body)?).await?;
            Ok(mobula_http::json(StatusCode::OK, &()))
        }
        "lease.take" => write!(Lease, |tx, a| jobs::lease(tx, &a)),
        other => Err(ApiError::new(
            Code::ResourceNotFound,
            format!("no method {other}"),
        )),
    }
}
