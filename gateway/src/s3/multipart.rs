//! S3 multipart uploads over Mobula's own (the `uploads` table): every part streams to the
//! upload's pinned nodes; completion concatenates the parts on those nodes and commits the
//! object in one metadata transaction (conditional headers checked in it), with S3's ETag
//! (`md5-of-md5s-N`). UploadPartCopy of a whole object whose copies are on the upload's nodes
//! is a reference to the same data (no byte moves); a range, or a source held elsewhere, is
//! streamed from the source's copies to the upload's nodes.

use md5::Digest;
use mobula_metadata::api::{now_ms, Headers, PutPart, Upload, UploadQuery};
use mobula_storage_node::api::new_id;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::convert::{
    content_headers, encode, md5_hex, object_path, s3_err, stored, time, S3_ETAG,
};
use super::object::{source, store, Upload as Body, DEFAULT_TYPE};
use super::sums::{claimed, fill, Sums};
use super::{Mobula, R};
use crate::fanout::discard_after;
use crate::uploads::{concat_and_commit, targets};

/// S3's part numbers.
const PARTS: std::ops::RangeInclusive<i32> = 1..=10_000;

fn account_of(bucket_path: &str) -> &str {
    bucket_path.split('/').nth(1).unwrap_or_default()
}

/// The open upload `id` for `bucket`/`key` of the request's account, or `NoSuchUpload`.
async fn open<T>(
    m: &Mobula,
    req: &S3Request<T>,
    bucket: &str,
    key: &str,
    id: &str,
) -> S3Result<Upload> {
    let b = m.bucket_for_write(req, bucket).await?;
    let path = object_path(account_of(&b), bucket, key)?;
    let u = if mobula_storage_node::api::valid_id(id) {
        m.gw.meta.upload(id).await.map_err(s3_err)?
    } else {
        None
    };
    match u {
        Some(u) if u.account == account_of(&b) && u.object_path == path && u.state == "created" => {
            Ok(u)
        }
        _ => Err(s3_error!(NoSuchUpload, "no such upload")),
    }
}

pub async fn create(
    m: &Mobula,
    req: S3Request<CreateMultipartUploadInput>,
) -> R<CreateMultipartUploadOutput> {
    let b = m.bucket_for_write(&req, &req.input.bucket).await?;
    let account = account_of(&b).to_string();
    let durability = crate::headers::durability(&req.headers).map_err(s3_err)?;
    let i = req.input;
    let path = object_path(&account, &i.bucket, &i.key)?;
    let headers = stored(i.metadata, content_headers!(i))?;
    let nodes = m.gw.nodes.place(durability, 0).map_err(s3_err)?;
    let u = Upload {
        id: new_id(),
        account,
        object_path: path,
        content_type: i.content_type.unwrap_or_else(|| DEFAULT_TYPE.into()),
        headers,
        durability,
        nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        state: "created".into(),
        created: now_ms(),
        committed_parts: None,
        parts: Vec::new(),
    };
    m.gw.meta.create_upload(&u).await.map_err(s3_err)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(u.id),
        ..Default::default()
    }))
}

fn part_number(n: i32) -> S3Result<u32> {
    if PARTS.contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"))
    }
}

/// Record part `n` of `u` as `data` (new, or `link`ed to existing data); reclaim new data if
/// the record fails.
async fn record(
    m: &Mobula,
    u: &Upload,
    n: u32,
    data: mobula_metadata::api::Data,
    link: bool,
) -> S3Result<()> {
    let p = PutPart {
        upload_id: u.id.clone(),
        n,
        data: data.clone(),
        link,
    };
    if let Err(e) = m.gw.meta.put_part(&p).await {
        if !link {
            discard_after(&m.gw, &e, &data.id, &data.nodes).await;
        }
        return Err(s3_err(e));
    }
    Ok(())
}

pub async fn upload_part(m: &Mobula, req: S3Request<UploadPartInput>) -> R<UploadPartOutput> {
    let n = part_number(req.input.part_number)?;
    let u = open(
        m,
        &req,
        &req.input.bucket,
        &req.input.key,
        &req.input.upload_id,
    )
    .await?;
    let i = req.input;
    let sums = Sums::new(&req.headers, claimed!(i), i.checksum_algorithm.as_ref());
    let targets = targets(&m.gw, &u).map_err(s3_err)?;
    let up = Body {
        body: i.body,
        content_md5: i.content_md5,
        sums: &sums,
        trailers: req.trailing_headers.as_ref(),
    };
    let (data, computed) = store(&m.gw, &targets, u.durability, up, false).await?;
    let etag = md5_hex(&data.md5);
    record(m, &u, n, data, false).await?;
    let mut c = Checksum::default();
    fill(&computed, &mut c);
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_crc64nvme: c.checksum_crc64nvme,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        ..Default::default()
    }))
}

/// `bytes=a-b` of `x-amz-copy-source-range`, checked against the source's size.
fn copy_range(r: &str, size: u64) -> S3Result<(u64, u64)> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range must be bytes=first-last"
        )
    };
    let (a, b) = r
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(s3_error!(InvalidRange, "the range is outside the source"));
    }
    Ok((a, b))
}

pub async fn upload_part_copy(
    m: &Mobula,
    req: S3Request<UploadPartCopyInput>,
) -> R<UploadPartCopyOutput> {
    let n = part_number(req.input.part_number)?;
    let u = open(
        m,
        &req,
        &req.input.bucket,
        &req.input.key,
        &req.input.upload_id,
    )
    .await?;
    let src = source(m, &req, &req.input.copy_source).await?;
    let sdata = src.data.clone().ok_or_else(|| s3_error!(NoSuchKey))?;
    let range = match &req.input.copy_source_range {
        Some(r) => Some(copy_range(r, sdata.size)?),
        None => None,
    };
    let shared = range.is_none() && u.nodes.iter().all(|n| sdata.nodes.contains(n));
    let (data, link) = if shared {
        (sdata, true)
    } else {
        let (a, b) = range.unwrap_or((0, sdata.size.saturating_sub(1)));
        let body = if sdata.size == 0 {
            StreamingBlob::from(s3s::Body::empty())
        } else {
            let s = crate::read::data_stream(&m.gw, &sdata, a, b)
                .await
                .map_err(s3_err)?;
            StreamingBlob::from(s3s::Body::http_body_unsync(mobula_http::stream(s)))
        };
        let targets = targets(&m.gw, &u).map_err(s3_err)?;
        let sums = Sums::new(&http::HeaderMap::new(), Default::default(), None);
        let up = Body {
            body: Some(body),
            content_md5: None,
            sums: &sums,
            trailers: None,
        };
        let (d, _) = store(&m.gw, &targets, u.durability, up, false).await?;
        (d, false)
    };
    let etag = md5_hex(&data.md5);
    record(m, &u, n, data, link).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(time(now_ms())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub async fn list_parts(m: &Mobula, req: S3Request<ListPartsInput>) -> R<ListPartsOutput> {
    let u = open(
        m,
        &req,
        &req.input.bucket,
        &req.input.key,
        &req.input.upload_id,
    )
    .await?;
    let i = req.input;
    let after = i.part_number_marker.unwrap_or(0).max(0) as u32;
    let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let mut parts: Vec<_> = u.parts.iter().filter(|p| p.n > after).collect();
    parts.sort_by_key(|p| p.n);
    let truncated = parts.len() > max;
    parts.truncate(max);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(i.upload_id),
        part_number_marker: i.part_number_marker,
        next_part_number_marker: parts.last().map(|p| p.n as i32),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(
            parts
                .iter()
                .map(|p| Part {
                    part_number: Some(p.n as i32),
                    e_tag: Some(ETag::Strong(md5_hex(&p.data.md5))),
                    size: Some(p.data.size as i64),
                    last_modified: Some(time(u.created)),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    m: &Mobula,
    req: S3Request<ListMultipartUploadsInput>,
) -> R<ListMultipartUploadsOutput> {
    let b = m.bucket(&req, &req.input.bucket).await?;
    let i = req.input;
    let base = format!("{b}/objects/");
    let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
    let mut q = UploadQuery {
        account: account_of(&b).to_string(),
        prefix: format!("{base}{}", i.prefix.clone().unwrap_or_default()),
        limit: max as u32 + 1,
        ..Default::default()
    };
    if let Some(k) = &i.key_marker {
        q.after_path = format!("{base}{k}");
        // Without an upload-id marker, every upload of the marker key is skipped.
        q.after_id = i
            .upload_id_marker
            .clone()
            .unwrap_or_else(|| "\u{10FFFF}".into());
    }
    let mut ups = m.gw.meta.uploads(&q).await.map_err(s3_err)?;
    let truncated = ups.len() > max;
    ups.truncate(max);
    let key = |u: &Upload| {
        u.object_path
            .strip_prefix(&base)
            .unwrap_or_default()
            .to_string()
    };
    // With a delimiter, uploads whose key holds it after the prefix roll up into one common
    // prefix each (within this page), as keys do in a listing.
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let mut groups: Vec<CommonPrefix> = Vec::new();
    ups.retain(|u| {
        let k = key(u);
        let Some(d) = &delimiter else { return true };
        let Some(at) = k.get(prefix.len()..).and_then(|rest| rest.find(d.as_str())) else {
            return true;
        };
        let cp = k[..prefix.len() + at + d.len()].to_string();
        if groups.last().and_then(|g| g.prefix.as_ref()) != Some(&cp) {
            groups.push(CommonPrefix { prefix: Some(cp) });
        }
        false
    });
    let url = i
        .encoding_type
        .as_ref()
        .is_some_and(|e| e.as_str() == EncodingType::URL);
    for g in &mut groups {
        g.prefix = g.prefix.take().map(|p| encode(&p, url));
    }
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket),
        delimiter: i.delimiter,
        common_prefixes: Some(groups),
        encoding_type: i.encoding_type,
        prefix: i.prefix,
        key_marker: i.key_marker,
        upload_id_marker: i.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: ups.last().filter(|_| truncated).map(key),
        next_upload_id_marker: ups.last().filter(|_| truncated).map(|u| u.id.clone()),
        uploads: Some(
            ups.iter()
                .map(|u| MultipartUpload {
                    key: Some(encode(&key(u), url)),
                    upload_id: Some(u.id.clone()),
                    initiated: Some(time(u.created)),
                    storage_class: Some(StorageClass::from("STANDARD".to_string())),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

pub async fn complete(
    m: &Mobula,
    req: S3Request<CompleteMultipartUploadInput>,
) -> R<CompleteMultipartUploadOutput> {
    let u = open(
        m,
        &req,
        &req.input.bucket,
        &req.input.key,
        &req.input.upload_id,
    )
    .await?;
    let i = req.input;
    let given = i.multipart_upload.and_then(|p| p.parts).unwrap_or_default();
    if given.is_empty() {
        return Err(s3_error!(
            MalformedXML,
            "a completion names at least one part"
        ));
    }
    let mut ids = Vec::new();
    let mut md5s = md5::Md5::new();
    let mut last = 0;
    for (idx, p) in given.iter().enumerate() {
        let n = p.part_number.unwrap_or(0);
        if n <= last {
            return Err(s3_error!(
                InvalidPartOrder,
                "parts must be in ascending order"
            ));
        }
        last = n;
        let want = p
            .e_tag
            .as_ref()
            .map(|t| t.value().trim_matches('"').to_string());
        let part = u
            .parts
            .iter()
            .find(|q| q.n as i32 == n)
            .filter(|q| want.as_deref() == Some(md5_hex(&q.data.md5).as_str()))
            .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded with that ETag"))?;
        if idx + 1 < given.len() && part.data.size < m.gw.cfg.min_part_size {
            return Err(s3_error!(
                EntityTooSmall,
                "part {n} is {} bytes; all parts but the last need {}",
                part.data.size,
                m.gw.cfg.min_part_size
            ));
        }
        md5s.update(hex::decode(md5_hex(&part.data.md5)).unwrap_or_default());
        ids.push(part.data.id.clone());
    }
    let etag = format!("{}-{}", hex::encode(md5s.finalize()), given.len());
    let mut headers = Headers::new();
    headers.insert(S3_ETAG.into(), etag.clone());
    let mut pre = mobula_metadata::api::Preconditions::default();
    if let Some(c) = &i.if_none_match {
        if c.is_any() {
            pre.if_none_match = Some(vec!["*".into()]);
        }
    }
    let e = concat_and_commit(&m.gw, &u, ids.clone(), ids, headers, pre)
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        e_tag: Some(ETag::Strong(etag)),
        location: Some(e.path),
        ..Default::default()
    }))
}

pub async fn abort(
    m: &Mobula,
    req: S3Request<AbortMultipartUploadInput>,
) -> R<AbortMultipartUploadOutput> {
    let u = open(
        m,
        &req,
        &req.input.bucket,
        &req.input.key,
        &req.input.upload_id,
    )
    .await?;
    m.gw.meta.abort_upload(&u.id).await.map_err(s3_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}
