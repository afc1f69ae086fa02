//! S3 object verbs: PutObject (streamed to the nodes through the gateway's fan-out, checksums
//! verified before the metadata commit, conditional writes checked inside that commit),
//! GetObject/HeadObject (conditional reads, ranges, failover between copies), DeleteObject(s),
//! and CopyObject — a snaplink: the new key shares the source's data, no byte moves.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hyper::body::Frame;
use mobula_metadata::api::{
    Data, DeleteEntry, Entry, Headers, Preconditions, PutLink, PutObject, UpdateMetadata,
};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use super::convert::{
    self, content_headers, etag, etag_of, object_path, s3_err, stored, time, CHECKSUMS,
};
use super::sums::{claimed, fill, Sums};
use super::{Mobula, R};
use crate::fanout::{discard, discard_after, write_data};
use crate::together::Declared;
use crate::Gateway;

/// S3's content type when none is given.
pub const DEFAULT_TYPE: &str = "binary/octet-stream";

/// What went wrong with a body as it streamed in (s3s's aws-chunked and SHA-256 checks fail
/// the stream; the reason is kept here to answer with S3's code).
#[derive(Debug, Clone, Default)]
pub struct BodyError(Arc<Mutex<Option<String>>>);

impl BodyError {
    /// The S3 error for a failed write: the body's own failure when there was one.
    pub fn or(&self, e: mobula_http::ApiError) -> S3Error {
        let body = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match body {
            Some(m) if m.contains("SignatureMismatch") => {
                s3_error!(
                    SignatureDoesNotMatch,
                    "an aws-chunked chunk signature is wrong"
                )
            }
            Some(m) if m.contains("Sha256Mismatch") => {
                let mut e = S3Error::with_message(
                    s3s::S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                    "the body does not match x-amz-content-sha256",
                );
                e.set_status_code(http::StatusCode::BAD_REQUEST);
                e
            }
            Some(m) => s3_error!(IncompleteBody, "reading the body: {m}"),
            None => s3_err(e),
        }
    }
}

/// A request body as it arrives: the stream, and what it claims about itself.
pub struct Upload<'a> {
    pub body: Option<StreamingBlob>,
    pub content_md5: Option<String>,
    pub sums: &'a Sums,
    pub trailers: Option<&'a s3s::TrailingHeaders>,
}

/// Stream a body to `targets` (hashing it for its checksums), then verify the checksums. On any
/// failure the data is reclaimed and an S3 error returned.
pub async fn store(
    gw: &Arc<Gateway>,
    targets: &[(String, String)],
    durability: u8,
    up: Upload<'_>,
    may_replace: bool,
) -> S3Result<(Data, Vec<(String, String)>)> {
    let Upload {
        body,
        content_md5,
        sums,
        trailers,
    } = up;
    let body = body.unwrap_or_else(|| {
        StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
    });
    // The decoded length (aws-chunked too), so that a small body may be written together.
    let length = s3s::stream::ByteStream::remaining_length(&body)
        .exact()
        .map(|n| n as u64);
    let failed = BodyError::default();
    let (s, f) = (sums.clone(), failed.clone());
    let stream = body.map(move |r| match r {
        Ok(b) => {
            s.update(&b);
            Ok(Frame::data(b))
        }
        Err(e) => {
            *f.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            Err(e)
        }
    });
    let data = write_data(
        gw,
        targets,
        durability,
        Declared(http_body_util::StreamBody::new(stream), length),
        content_md5,
        may_replace,
    )
    .await
    .map_err(|e| failed.or(e))?;
    match sums.verify(trailers) {
        Ok(computed) => Ok((data, computed)),
        Err(e) => {
            discard(gw, &data.id, &data.nodes).await;
            Err(e)
        }
    }
}

/// The current object for an `If-Match` write: its Manta ETag (data id) to check atomically.
async fn write_preconditions(
    m: &Mobula,
    path: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Preconditions> {
    let mut pre = Preconditions::default();
    if let Some(c) = if_none_match {
        if !c.is_any() {
            return Err(s3_error!(
                NotImplemented,
                "If-None-Match on writes takes only *"
            ));
        }
        pre.if_none_match = Some(vec!["*".into()]);
    }
    if let Some(c) = if_match {
        let cur = m.gw.meta.get(path).await.map_err(s3_err)?;
        let cur = cur.ok_or_else(|| s3_error!(NoSuchKey))?;
        if let ETagCondition::ETag(t) = c {
            if t.value() != etag_of(&cur) {
                return Err(s3_error!(PreconditionFailed, "the object's ETag differs"));
            }
        }
        let id = cur.data.map(|d| d.id).unwrap_or_default();
        pre.if_match = Some(vec![id]);
    }
    Ok(pre)
}

pub async fn put(m: &Mobula, req: S3Request<PutObjectInput>) -> R<PutObjectOutput> {
    let bucket = m.bucket_for_write(&req, &req.input.bucket).await?;
    let account = bucket.split('/').nth(1).unwrap_or_default().to_string();
    let i = req.input;
    let path = object_path(&account, &i.bucket, &i.key)?;
    let pre = write_preconditions(m, &path, i.if_match.as_ref(), i.if_none_match.as_ref()).await?;
    // Fail early, before any byte moves (checked again, atomically, in the commit).
    if pre.if_none_match.is_some() && m.gw.meta.get(&path).await.map_err(s3_err)?.is_some() {
        return Err(s3_error!(PreconditionFailed, "the key exists"));
    }
    let sums = Sums::new(&req.headers, claimed!(i), i.checksum_algorithm.as_ref());
    let mut headers = stored(i.metadata, content_headers!(i))?;
    let size = i.content_length.unwrap_or(0).max(0) as u64;
    let durability = crate::headers::durability(&req.headers).map_err(s3_err)?;
    let targets = m.gw.nodes.place(durability, size).map_err(s3_err)?;
    let up = Upload {
        body: i.body,
        content_md5: i.content_md5,
        sums: &sums,
        trailers: req.trailing_headers.as_ref(),
    };
    let (data, computed) = store(&m.gw, &targets, durability, up, true).await?;
    headers.extend(computed.iter().cloned());
    let put = PutObject {
        parents: false,
        path,
        data: data.clone(),
        content_type: i.content_type.unwrap_or_else(|| DEFAULT_TYPE.into()),
        headers,
        preconditions: pre,
    };
    let e = match m.gw.meta.put_object(&put).await {
        Ok(e) => e,
        Err(err) => {
            discard_after(&m.gw, &err, &data.id, &data.nodes).await;
            return Err(s3_err(err));
        }
    };
    let mut c = Checksum::default();
    fill(&computed, &mut c);
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&e)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// The object at `bucket`/`key` of the request's account. One metadata lookup when it exists;
/// only a missing object costs a second, to tell `NoSuchBucket` from `NoSuchKey`.
async fn entry<T>(m: &Mobula, req: &S3Request<T>, bucket: &str, key: &str) -> S3Result<Entry> {
    let account = m.keys.account(&req.credentials).await?;
    let path = object_path(&account, bucket, key)?;
    match m.gw.meta.get(&path).await.map_err(s3_err)? {
        Some(e) if e.data.is_some() => Ok(e),
        _ => {
            m.bucket(req, bucket).await?;
            Err(s3_error!(NoSuchKey, "no such key"))
        }
    }
}

/// Conditional reads: `If-Match`/`If-Unmodified-Since` fail with 412, `If-None-Match`/
/// `If-Modified-Since` answer 304 (S3's precedence: an ETag condition overrides the date).
fn check_read(
    e: &Entry,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    modified_since: Option<&Timestamp>,
    unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let tag = etag_of(e);
    let secs = |t: &Timestamp| {
        let mut out = Vec::new();
        let _ = t.format(TimestampFormat::EpochSeconds, &mut out);
        String::from_utf8_lossy(&out)
            .parse::<f64>()
            .map(|s| s.floor() as i64)
            .unwrap_or(0)
    };
    let mtime = e.mtime / 1000;
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value() == tag,
    };
    match (if_match, unmodified_since) {
        (Some(c), _) if !matches(c) => return Err(s3_error!(PreconditionFailed)),
        (None, Some(t)) if mtime > secs(t) => return Err(s3_error!(PreconditionFailed)),
        _ => {}
    }
    match (if_none_match, modified_since) {
        (Some(c), _) if matches(c) => Err(S3Error::new(s3s::S3ErrorCode::NotModified)),
        (None, Some(t)) if mtime <= secs(t) => Err(S3Error::new(s3s::S3ErrorCode::NotModified)),
        _ => Ok(()),
    }
}

/// The checksums stored with an object that a read returns (stored header name, value): with
/// checksum mode on, when the whole of a single-part object is read.
pub fn stored_checksums(e: &Entry, enabled: bool, whole: bool) -> Vec<(&'static str, &String)> {
    if !enabled || !whole || e.headers.contains_key(convert::S3_ETAG) {
        return Vec::new();
    }
    CHECKSUMS
        .iter()
        .filter_map(|n| Some((*n, e.headers.get(*n)?)))
        .collect()
}

/// [`stored_checksums`] as the output's fields.
fn stored_sums(e: &Entry, mode: Option<&ChecksumMode>, whole: bool) -> Checksum {
    let enabled = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    let sums: Vec<(String, String)> = stored_checksums(e, enabled, whole)
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let mut c = Checksum::default();
    fill(&sums, &mut c);
    c
}

pub async fn get(m: &Mobula, req: S3Request<GetObjectInput>) -> R<GetObjectOutput> {
    let i = &req.input;
    if i.part_number.is_some() {
        return Err(s3_error!(NotImplemented, "GetObject by part number"));
    }
    let e = entry(m, &req, &i.bucket, &i.key).await?;
    check_read(
        &e,
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
        i.if_modified_since.as_ref(),
        i.if_unmodified_since.as_ref(),
    )?;
    let data = e.data.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
    let (start, end, range) = match &i.range {
        Some(r) => {
            let r = r.check(data.size)?;
            (r.start, r.end, true)
        }
        None => (0, data.size, false),
    };
    let body = if end > start {
        let s = crate::read::data_stream(&m.gw, &data, start, end - 1)
            .await
            .map_err(s3_err)?;
        StreamingBlob::from(s3s::Body::http_body_unsync(mobula_http::stream(s)))
    } else {
        StreamingBlob::from(s3s::Body::empty())
    };
    let c = stored_sums(&e, i.checksum_mode.as_ref(), !range);
    let h = |n: &str| convert::header(&e, n);
    Ok(S3Response::new(GetObjectOutput {
        body: Some(body),
        content_length: Some((end - start) as i64),
        content_range: range.then(|| format!("bytes {start}-{}/{}", end.max(1) - 1, data.size)),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(etag(&e)),
        last_modified: Some(time(e.mtime)),
        content_type: Some(
            i.response_content_type
                .clone()
                .unwrap_or(e.content_type.clone()),
        ),
        content_disposition: i
            .response_content_disposition
            .clone()
            .or(h("content-disposition")),
        cache_control: i.response_cache_control.clone().or(h("cache-control")),
        content_encoding: i
            .response_content_encoding
            .clone()
            .or(h("content-encoding")),
        content_language: i
            .response_content_language
            .clone()
            .or(h("content-language")),
        expires: convert::expires_of(&e),
        metadata: convert::metadata(&e),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

pub async fn head(m: &Mobula, req: S3Request<HeadObjectInput>) -> R<HeadObjectOutput> {
    let i = &req.input;
    let e = entry(m, &req, &i.bucket, &i.key).await?;
    check_read(
        &e,
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
        i.if_modified_since.as_ref(),
        i.if_unmodified_since.as_ref(),
    )?;
    let size = e.data.as_ref().map_or(0, |d| d.size);
    let (len, range) = match &i.range {
        Some(r) => {
            let r = r.check(size)?;
            (
                r.end - r.start,
                Some(format!("bytes {}-{}/{size}", r.start, r.end.max(1) - 1)),
            )
        }
        None => (size, None),
    };
    let c = stored_sums(&e, i.checksum_mode.as_ref(), range.is_none());
    let h = |n: &str| convert::header(&e, n);
    Ok(S3Response::new(HeadObjectOutput {
        content_length: Some(len as i64),
        content_range: range,
        accept_ranges: Some("bytes".into()),
        e_tag: Some(etag(&e)),
        last_modified: Some(time(e.mtime)),
        content_type: Some(e.content_type.clone()),
        content_disposition: h("content-disposition"),
        cache_control: h("cache-control"),
        content_encoding: h("content-encoding"),
        content_language: h("content-language"),
        expires: convert::expires_of(&e),
        metadata: convert::metadata(&e),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// Delete one key of a bucket path; a missing key is not an error (S3's rule).
async fn delete_key(m: &Mobula, bucket: &str, key: &str) -> S3Result<()> {
    let account = bucket.split('/').nth(1).unwrap_or_default();
    let name = bucket.rsplit('/').next().unwrap_or_default();
    let path = object_path(account, name, key)?;
    match m
        .gw
        .meta
        .delete(&DeleteEntry {
            path,
            preconditions: Preconditions::default(),
        })
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code == mobula_http::Code::ResourceNotFound => Ok(()),
        Err(e) => Err(s3_err(e)),
    }
}

pub async fn delete(m: &Mobula, req: S3Request<DeleteObjectInput>) -> R<DeleteObjectOutput> {
    let bucket = m.bucket(&req, &req.input.bucket).await?;
    delete_key(m, &bucket, &req.input.key).await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub async fn delete_many(m: &Mobula, req: S3Request<DeleteObjectsInput>) -> R<DeleteObjectsOutput> {
    let bucket = m.bucket(&req, &req.input.bucket).await?;
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let keys: Vec<String> = req
        .input
        .delete
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    if keys.len() > 1000 {
        return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
    }
    let results: Vec<(String, S3Result<()>)> = futures::stream::iter(keys)
        .map(|k| {
            let bucket = bucket.clone();
            async move {
                let r = delete_key(m, &bucket, &k).await;
                (k, r)
            }
        })
        .buffered(16)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (k, r) in results {
        match r {
            Ok(()) if !quiet => deleted.push(DeletedObject {
                key: Some(k),
                ..Default::default()
            }),
            Ok(()) => {}
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(k),
                message: e.message().map(str::to_string),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

/// The source of a copy, in the request's account.
pub async fn source<T>(m: &Mobula, req: &S3Request<T>, src: &CopySource) -> S3Result<Entry> {
    match src {
        CopySource::Bucket { bucket, key, .. } => entry(m, req, bucket, key).await,
        _ => Err(s3_error!(NotImplemented, "copy sources are bucket/key")),
    }
}

pub async fn copy(m: &Mobula, req: S3Request<CopyObjectInput>) -> R<CopyObjectOutput> {
    let dst_bucket = m.bucket_for_write(&req, &req.input.bucket).await?;
    let src = source(m, &req, &req.input.copy_source).await?;
    let i = req.input;
    check_read(
        &src,
        i.copy_source_if_match.as_ref(),
        None,
        None,
        i.copy_source_if_unmodified_since.as_ref(),
    )?;
    if let Some(c) = &i.copy_source_if_none_match {
        if matches!(c, ETagCondition::Any)
            || matches!(c, ETagCondition::ETag(t) if t.value() == etag_of(&src))
        {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    let account = dst_bucket.split('/').nth(1).unwrap_or_default();
    let path = object_path(account, &i.bucket, &i.key)?;
    let replace = i
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if path == src.path && !replace {
        return Err(s3_error!(
            InvalidRequest,
            "copying an object to itself without changing anything is not allowed"
        ));
    }
    let mut e =
        m.gw.meta
            .put_link(&PutLink {
                path: path.clone(),
                source: src.path.clone(),
                preconditions: Preconditions::default(),
            })
            .await
            .map_err(s3_err)?;
    if replace {
        let mut headers: Headers = stored(i.metadata, content_headers!(i))?;
        for (k, v) in &src.headers {
            if k.starts_with("x-amz-checksum-") || k == convert::S3_ETAG {
                headers.insert(k.clone(), v.clone());
            }
        }
        e =
            m.gw.meta
                .update_metadata(&UpdateMetadata {
                    path,
                    content_type: i.content_type.unwrap_or_else(|| DEFAULT_TYPE.into()),
                    headers,
                })
                .await
                .map_err(s3_err)?;
    }
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&e)),
            last_modified: Some(time(e.mtime)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
