//! S3 bucket operations and listings: create/head/delete/list buckets, location, versioning
//! (never enabled), ListObjects V1 and V2, and ListObjectVersions (each object once, version
//! `null`). Every key listing is one metadata `bucket.list` page (index range scans, see
//! `metadata/src/buckets.rs`).

use base64::Engine;
use mobula_metadata::api::{Entry, KeyItem, KeyPage, KeyQuery, ListQuery, SortBy};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::convert::{bucket_path, encode, etag, s3_err, time};
use super::{Mobula, R};

/// Largest page S3 returns.
const MAX_KEYS: i32 = 1000;

fn ok<T>(output: T) -> R<T> {
    Ok(S3Response::new(output))
}

impl Mobula {
    /// The bucket path of a request, after checking that the bucket exists.
    pub(super) async fn bucket<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<String> {
        let account = self.keys.account(&req.credentials).await?;
        let path = bucket_path(&account, bucket);
        match self.gw.meta.get(&path).await.map_err(s3_err)? {
            Some(_) => {
                self.known.saw(&path);
                Ok(path)
            }
            None => Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist")),
        }
    }

    /// [`Mobula::bucket`] for a write whose metadata commit checks the bucket again: a bucket
    /// seen in the last few seconds costs no round trip.
    pub(super) async fn bucket_for_write<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
    ) -> S3Result<String> {
        let account = self.keys.account(&req.credentials).await?;
        let path = bucket_path(&account, bucket);
        if self.known.fresh(&path) {
            return Ok(path);
        }
        self.bucket(req, bucket).await
    }

    /// One page of keys.
    async fn keys(
        &self,
        bucket: String,
        prefix: Option<String>,
        delimiter: Option<String>,
        start_after: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<KeyPage> {
        let limit = match max_keys {
            None => MAX_KEYS,
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-keys is negative")),
            Some(n) => n.min(MAX_KEYS),
        };
        if limit == 0 {
            return Ok(KeyPage {
                items: Vec::new(),
                truncated: false,
            });
        }
        self.gw
            .meta
            .list_keys(&KeyQuery {
                bucket,
                prefix: prefix.unwrap_or_default(),
                delimiter: delimiter.unwrap_or_default(),
                start_after: start_after.filter(|s| !s.is_empty()),
                limit: limit as u32,
            })
            .await
            .map_err(s3_err)
    }
}

fn object(e: &Entry, url: bool) -> Object {
    Object {
        key: Some(encode(&e.name, url)),
        last_modified: Some(time(e.mtime)),
        e_tag: Some(etag(e)),
        size: Some(e.data.as_ref().map_or(0, |d| d.size as i64)),
        storage_class: Some(ObjectStorageClass::from("STANDARD".to_string())),
        ..Default::default()
    }
}

/// Objects and common prefixes of a page.
fn split(page: &KeyPage, url: bool) -> (Vec<Object>, Vec<CommonPrefix>) {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for i in &page.items {
        match i {
            KeyItem::Object(e) => objects.push(object(e, url)),
            KeyItem::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(encode(p, url)),
            }),
        }
    }
    (objects, prefixes)
}

fn is_url(e: &Option<EncodingType>) -> bool {
    e.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL)
}

/// Where the next page starts, when there is one: after the page's last key or prefix.
fn next_marker(page: &KeyPage) -> Option<&str> {
    page.items
        .last()
        .filter(|_| page.truncated)
        .map(KeyItem::marker)
}

fn token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker)
}

fn untoken(t: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not one of ours"))
}

pub async fn create(m: &Mobula, req: S3Request<CreateBucketInput>) -> R<CreateBucketOutput> {
    let account = m.keys.account(&req.credentials).await?;
    let name = &req.input.bucket;
    if !mobula_metadata::api::valid_bucket_name(name) {
        return Err(s3_error!(
            InvalidBucketName,
            "{name} is not a valid bucket name"
        ));
    }
    m.gw.meta
        .create_bucket(&bucket_path(&account, name))
        .await
        .map_err(s3_err)?;
    ok(CreateBucketOutput {
        location: Some(format!("/{name}")),
    })
}

pub async fn head(m: &Mobula, req: S3Request<HeadBucketInput>) -> R<HeadBucketOutput> {
    m.bucket(&req, &req.input.bucket).await?;
    ok(HeadBucketOutput::default())
}

pub async fn delete(m: &Mobula, req: S3Request<DeleteBucketInput>) -> R<DeleteBucketOutput> {
    let path = m.bucket(&req, &req.input.bucket).await?;
    m.known.forget(&path);
    m.gw.meta.delete_bucket(&path).await.map_err(s3_err)?;
    ok(DeleteBucketOutput::default())
}

pub async fn list(m: &Mobula, req: S3Request<ListBucketsInput>) -> R<ListBucketsOutput> {
    let account = m.keys.account(&req.credentials).await?;
    let area = format!("/{account}/buckets");
    let mut buckets = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page =
            m.gw.meta
                .list(&ListQuery {
                    path: area.clone(),
                    marker: marker.clone(),
                    limit: 1024,
                    sort: SortBy::Name,
                    reverse: false,
                })
                .await
                .map_err(s3_err)?;
        let n = page.entries.len();
        for e in page.entries {
            // The marker is inclusive: skip the one already taken.
            if marker.as_deref() == Some(e.name.as_str()) {
                continue;
            }
            marker = Some(e.name.clone());
            buckets.push(Bucket {
                name: Some(e.name),
                creation_date: Some(time(e.mtime)),
                ..Default::default()
            });
        }
        if n < 1024 {
            break;
        }
    }
    ok(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some(account.clone()),
            id: Some(account),
        }),
        ..Default::default()
    })
}

pub async fn location(
    m: &Mobula,
    req: S3Request<GetBucketLocationInput>,
) -> R<GetBucketLocationOutput> {
    m.bucket(&req, &req.input.bucket).await?;
    ok(GetBucketLocationOutput::default())
}

pub async fn versioning(
    m: &Mobula,
    req: S3Request<GetBucketVersioningInput>,
) -> R<GetBucketVersioningOutput> {
    m.bucket(&req, &req.input.bucket).await?;
    ok(GetBucketVersioningOutput::default())
}

pub async fn list_objects_v2(
    m: &Mobula,
    req: S3Request<ListObjectsV2Input>,
) -> R<ListObjectsV2Output> {
    let path = m.bucket(&req, &req.input.bucket).await?;
    let i = req.input;
    let after = match &i.continuation_token {
        Some(t) => Some(untoken(t)?),
        None => i.start_after.clone(),
    };
    let page = m
        .keys(
            path,
            i.prefix.clone(),
            i.delimiter.clone(),
            after,
            i.max_keys,
        )
        .await?;
    let url = is_url(&i.encoding_type);
    let (contents, prefixes) = split(&page, url);
    let next = next_marker(&page).map(token);
    ok(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(encode(&i.prefix.unwrap_or_default(), url)),
        delimiter: i.delimiter.map(|d| encode(&d, url)),
        max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS)),
        key_count: Some(page.items.len() as i32),
        continuation_token: i.continuation_token,
        start_after: i.start_after.map(|s| encode(&s, url)),
        is_truncated: Some(page.truncated),
        next_continuation_token: next,
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        encoding_type: i.encoding_type,
        ..Default::default()
    })
}

pub async fn list_objects_v1(m: &Mobula, req: S3Request<ListObjectsInput>) -> R<ListObjectsOutput> {
    let path = m.bucket(&req, &req.input.bucket).await?;
    let i = req.input;
    let page = m
        .keys(
            path,
            i.prefix.clone(),
            i.delimiter.clone(),
            i.marker.clone(),
            i.max_keys,
        )
        .await?;
    let url = is_url(&i.encoding_type);
    let (contents, prefixes) = split(&page, url);
    let next = next_marker(&page).map(|m| encode(m, url));
    ok(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: Some(encode(&i.prefix.unwrap_or_default(), url)),
        delimiter: i.delimiter.map(|d| encode(&d, url)),
        marker: Some(encode(&i.marker.unwrap_or_default(), url)),
        max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS)),
        is_truncated: Some(page.truncated),
        next_marker: next,
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        encoding_type: i.encoding_type,
        ..Default::default()
    })
}

pub async fn list_versions(
    m: &Mobula,
    req: S3Request<ListObjectVersionsInput>,
) -> R<ListObjectVersionsOutput> {
    let path = m.bucket(&req, &req.input.bucket).await?;
    let i = req.input;
    let page = m
        .keys(
            path,
            i.prefix.clone(),
            i.delimiter.clone(),
            i.key_marker.clone(),
            i.max_keys,
        )
        .await?;
    let url = is_url(&i.encoding_type);
    let mut versions = Vec::new();
    let mut prefixes = Vec::new();
    for item in &page.items {
        match item {
            KeyItem::Object(e) => versions.push(ObjectVersion {
                key: Some(encode(&e.name, url)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                last_modified: Some(time(e.mtime)),
                e_tag: Some(etag(e)),
                size: Some(e.data.as_ref().map_or(0, |d| d.size as i64)),
                storage_class: Some(ObjectVersionStorageClass::from("STANDARD".to_string())),
                ..Default::default()
            }),
            KeyItem::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(encode(p, url)),
            }),
        }
    }
    let next = next_marker(&page).map(|m| encode(m, url));
    ok(ListObjectVersionsOutput {
        name: Some(i.bucket),
        prefix: Some(encode(&i.prefix.unwrap_or_default(), url)),
        delimiter: i.delimiter.map(|d| encode(&d, url)),
        key_marker: Some(i.key_marker.unwrap_or_default()),
        version_id_marker: i.version_id_marker,
        max_keys: Some(i.max_keys.unwrap_or(MAX_KEYS)),
        is_truncated: Some(page.truncated),
        next_version_id_marker: next.as_ref().map(|_| "null".to_string()),
        next_key_marker: next,
        versions: Some(versions),
        common_prefixes: Some(prefixes),
        encoding_type: i.encoding_type,
        ..Default::default()
    })
}
