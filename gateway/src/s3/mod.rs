//! The S3 listener (SPEC §8): the `s3s` crate parses S3's wire format (routing every request to
//! one `S3Operation`, SigV4 in headers and presigned URLs, `aws-chunked` bodies) and calls the
//! [`S3`] trait implemented here over the gateway's own internals — the same fan-out writes,
//! failover reads and metadata transactions as the Manta API, with no HTTP hop between them.
//!
//! Bucket `b` of the account owning the access key is `/:account/buckets/b`; key `k` is
//! `/:account/buckets/b/objects/k`. Errors are S3's XML with the request id (also in
//! `x-amz-request-id`); what is not implemented answers `NotImplemented` (s3s's default for
//! every operation this trait impl does not override).
//!
//! Modules: [`keys`] (access keys → accounts, the SigV4 secret lookup), `convert` (ETags,
//! metadata, errors), `bucket` (buckets and listings), `object` (object verbs), `multipart`.

mod bucket;
mod convert;
mod fast;
pub mod keys;
mod known;
mod multipart;
mod object;
mod opname;
mod sigv4;
mod sums;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use mobula_http::{Body, Request};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Request, S3Response, S3Result, S3};
use tokio::net::TcpListener;

use crate::Gateway;
use keys::Keys;

/// The S3 implementation over one gateway.
#[derive(Debug, Clone)]
pub struct Mobula {
    gw: Arc<Gateway>,
    keys: Arc<Keys>,
    /// Buckets seen to exist in the last few seconds, for writes (see [`Mobula::bucket_for_write`]).
    known: Arc<known::Known>,
    /// Virtual-host-style domains.
    domains: Arc<Domains>,
    /// The GET fast path's state.
    fast: Arc<fast::Fast>,
}

/// S3 listener settings.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Base domains for virtual-host-style requests (`bucket.DOMAIN`); path style always works.
    pub domains: Vec<String>,
    /// Whether plain GetObjects are answered without s3s (see ARCHITECTURE.md, "The S3 GET fast
    /// path"); on by default, off with `MOBULA_S3_FAST_GET=0`.
    pub fast_get: bool,
    /// How many GETs the fast path answered (shared with whoever made the config).
    pub fast_served: Arc<AtomicU64>,
}

impl Default for S3Config {
    fn default() -> S3Config {
        S3Config {
            domains: Vec::new(),
            fast_get: std::env::var("MOBULA_S3_FAST_GET").map_or(true, |v| v != "0"),
            fast_served: Arc::default(),
        }
    }
}

impl S3Config {
    /// The default settings with these virtual-host domains.
    pub fn with_domains(domains: Vec<String>) -> S3Config {
        S3Config {
            domains,
            ..S3Config::default()
        }
    }
}

/// The S3 implementation over `gw`.
fn mobula(gw: Arc<Gateway>, cfg: &S3Config) -> Mobula {
    Mobula {
        keys: Arc::new(Keys::new(gw.meta.clone())),
        gw,
        known: Arc::default(),
        domains: Arc::new(Domains(cfg.domains.clone())),
        fast: Arc::new(fast::Fast::new(cfg.fast_served.clone())),
    }
}

/// Build the S3 service over `gw`.
pub fn service(gw: Arc<Gateway>, cfg: &S3Config) -> S3Service {
    s3s_service(mobula(gw, cfg))
}

fn s3s_service(m: Mobula) -> S3Service {
    let keys = m.keys.clone();
    let domains = m.domains.clone();
    let mut b = S3ServiceBuilder::new(m);
    b.set_auth(keys::KeyAuth(keys));
    b.set_access(opname::RecordOp);
    if !domains.0.is_empty() {
        b.set_host(Domains(domains.0.clone()));
    }
    b.build()
}

/// Virtual-host-style addressing: `bucket.DOMAIN[:port]` names a bucket; any other host (the
/// domain itself, an IP address, `localhost`) is path style. (s3s's `MultiDomain` would take an
/// unknown host, port included, for a bucket name, which breaks path-style clients.)
#[derive(Debug)]
struct Domains(Vec<String>);

impl Domains {
    /// `host` without its port.
    fn name(host: &str) -> &str {
        match host.rsplit_once(':') {
            Some((h, port)) if port.parse::<u16>().is_ok() => h,
            _ => host,
        }
    }

    /// The domain and bucket `host` names, if it is `bucket.DOMAIN`.
    fn split<'a, 'h>(&'a self, host: &'h str) -> Option<(&'a str, &'h str)> {
        let name = Domains::name(host);
        self.0.iter().find_map(|d| {
            let b = name.strip_suffix(d.as_str())?.strip_suffix('.')?;
            Some((d.as_str(), b))
        })
    }
}

impl s3s::host::S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        Ok(match self.split(host) {
            Some((d, bucket)) => s3s::host::VirtualHost::new(d).with_bucket(bucket),
            None => s3s::host::VirtualHost::new(Domains::name(host)),
        })
    }
}

/// Serve S3 on `listener` (TLS when the gateway has a certificate) until `shutdown`.
pub async fn run(
    gw: Arc<Gateway>,
    cfg: S3Config,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let tls = match &gw.cfg.tls {
        Some((cert, key)) => match mobula_http::tls_acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("S3 listener TLS: {e}");
                return;
            }
        },
        None => None,
    };
    let m = mobula(gw, &cfg);
    let svc = s3s_service(m.clone());
    let fast = cfg.fast_get.then(|| Arc::new(m));
    let limits = mobula_http::Limits {
        api: Some("s3"),
        ..Default::default()
    };
    mobula_http::serve_with(
        listener,
        tls,
        move |req| handle(svc.clone(), fast.clone(), req),
        shutdown,
        Duration::from_secs(10),
        limits,
    )
    .await
}

/// One request, through the GET fast path or s3s; every answer gets a request id, in the
/// header and in error XML.
async fn handle(svc: S3Service, fast: Option<Arc<Mobula>>, mut req: Request) -> Response<Body> {
    let started = std::time::Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    if let Some(m) = &fast {
        let rid: Arc<str> = Arc::from(request_id.as_str());
        if let Some(mut r) = mobula_http::reqid::scope(rid, fast::get(m, &req)).await {
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                r.headers_mut().insert("x-amz-request-id", v);
            }
            mobula_http::telemetry::request("s3", "GetObject", r.status(), started);
            return r;
        }
    }
    let op = opname::OpSlot::default();
    req.extensions_mut().insert(op.clone());
    let rid: Arc<str> = Arc::from(request_id.as_str());
    let call = svc.call(req.map(s3s::Body::from));
    let mut resp = match mobula_http::reqid::scope(rid, call).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%request_id, "S3: {e:?}");
            let mut r = Response::new(s3s::Body::from(Bytes::from_static(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code></Error>",
            )));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        if let Some(b) = resp.body().bytes() {
            let with_id = convert::add_request_id(&b, &request_id);
            *resp.body_mut() = s3s::Body::from(with_id);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    mobula_http::telemetry::request("s3", op.name(), resp.status(), started);
    resp.map(|b| b.map_err(|e| -> mobula_http::BoxError { e }).boxed_unsync())
}

type R<T> = S3Result<S3Response<T>>;

#[async_trait::async_trait]
impl S3 for Mobula {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> R<CreateBucketOutput> {
        bucket::create(self, req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> R<HeadBucketOutput> {
        bucket::head(self, req).await
    }
    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> R<DeleteBucketOutput> {
        bucket::delete(self, req).await
    }
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> R<ListBucketsOutput> {
        bucket::list(self, req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> R<GetBucketLocationOutput> {
        bucket::location(self, req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> R<GetBucketVersioningOutput> {
        bucket::versioning(self, req).await
    }
    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> R<ListObjectsOutput> {
        bucket::list_objects_v1(self, req).await
    }
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> R<ListObjectsV2Output> {
        bucket::list_objects_v2(self, req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> R<ListObjectVersionsOutput> {
        bucket::list_versions(self, req).await
    }
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> R<PutObjectOutput> {
        object::put(self, req).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> R<GetObjectOutput> {
        object::get(self, req).await
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> R<HeadObjectOutput> {
        object::head(self, req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> R<DeleteObjectOutput> {
        object::delete(self, req).await
    }
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> R<DeleteObjectsOutput> {
        object::delete_many(self, req).await
    }
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> R<CopyObjectOutput> {
        object::copy(self, req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> R<CreateMultipartUploadOutput> {
        multipart::create(self, req).await
    }
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> R<UploadPartOutput> {
        multipart::upload_part(self, req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> R<UploadPartCopyOutput> {
        multipart::upload_part_copy(self, req).await
    }
    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> R<ListPartsOutput> {
        multipart::list_parts(self, req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> R<ListMultipartUploadsOutput> {
        multipart::list_uploads(self, req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> R<CompleteMultipartUploadOutput> {
        multipart::complete(self, req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> R<AbortMultipartUploadOutput> {
        multipart::abort(self, req).await
    }
}
