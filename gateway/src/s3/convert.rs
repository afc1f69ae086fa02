//! Between S3's shapes and Mobula's: paths, ETags, metadata, times, checksums and errors.
//!
//! Stored headers (the same map the Manta API keeps): S3 user metadata `x-amz-meta-k` is Manta's
//! `m-k`, so either API sees the other's; `x-amz-checksum-*` are kept as given and verified;
//! a multipart object's S3 ETag (`md5-of-md5s-N`) is kept under [`S3_ETAG`]. A single-part
//! object's S3 ETag is the hex MD5 of its bytes.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use mobula_http::{ApiError, Code};
use mobula_metadata::api::{Entry, Headers, MAX_KEY};
use s3s::dto::{ETag, Metadata, Timestamp};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Result};

/// Stored header holding a multipart object's S3 ETag.
pub const S3_ETAG: &str = "s3-etag";

/// The checksum algorithms S3 clients send, as stored header names.
pub const CHECKSUMS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

/// `/:account/buckets/:bucket`.
pub fn bucket_path(account: &str, bucket: &str) -> String {
    format!("/{account}/buckets/{bucket}")
}

/// `/:account/buckets/:bucket/objects/:key`, or `KeyTooLongError`.
pub fn object_path(account: &str, bucket: &str, key: &str) -> S3Result<String> {
    if key.len() > MAX_KEY {
        return Err(s3_error!(
            KeyTooLongError,
            "a key is at most {MAX_KEY} bytes"
        ));
    }
    if key.is_empty() || key.contains('\0') {
        return Err(s3_error!(
            InvalidArgument,
            "a key is 1 or more bytes without NUL"
        ));
    }
    Ok(format!("/{account}/buckets/{bucket}/objects/{key}"))
}

/// An MD5 kept as base64 (Manta's `content-md5`), as hex.
pub fn md5_hex(b64: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(hex::encode)
        .unwrap_or_default()
}

/// The S3 ETag of an object (unquoted).
pub fn etag_of(e: &Entry) -> String {
    if let Some(t) = e.headers.get(S3_ETAG) {
        return t.clone();
    }
    e.data.as_ref().map(|d| md5_hex(&d.md5)).unwrap_or_default()
}

/// The ETag DTO of an object.
pub fn etag(e: &Entry) -> ETag {
    ETag::Strong(etag_of(e))
}

/// A time in ms since the epoch, as S3's timestamp.
pub fn time(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The standard content headers of an S3 input (PutObject, CopyObject, CreateMultipartUpload
/// share the field names), as [`stored`] takes them.
macro_rules! content_headers {
    ($i:expr) => {
        [
            ("cache-control", $i.cache_control),
            ("content-disposition", $i.content_disposition),
            ("content-encoding", $i.content_encoding),
            ("content-language", $i.content_language),
            ("expires", $crate::s3::convert::expires($i.expires)),
        ]
    };
}
pub(crate) use content_headers;

/// Headers to store from S3 user metadata and the standard content headers.
pub fn stored(
    metadata: Option<Metadata>,
    content: [(&str, Option<String>); 5],
) -> S3Result<Headers> {
    let mut h = Headers::new();
    let mut size = 0;
    for (k, v) in metadata.unwrap_or_default() {
        size += k.len() + v.len();
        h.insert(format!("m-{}", k.to_ascii_lowercase()), v);
    }
    if size > 2048 {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is at most 2 KiB"
        ));
    }
    for (name, v) in content {
        if let Some(v) = v {
            h.insert(name.to_string(), v);
        }
    }
    Ok(h)
}

/// An object's user metadata (its `m-*` headers) as S3's.
pub fn metadata(e: &Entry) -> Option<Metadata> {
    let m: Metadata = e
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("m-")?.to_string(), v.clone())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// `Expires` as stored (an HTTP date).
pub fn expires(t: Option<Timestamp>) -> Option<String> {
    let mut out = Vec::new();
    t?.format(s3s::dto::TimestampFormat::HttpDate, &mut out)
        .ok()?;
    String::from_utf8(out).ok()
}

/// A stored `Expires` back as S3's timestamp.
pub fn expires_of(e: &Entry) -> Option<Timestamp> {
    Timestamp::parse(
        s3s::dto::TimestampFormat::HttpDate,
        e.headers.get("expires")?,
    )
    .ok()
}

/// A stored header of an object.
pub fn header(e: &Entry, name: &str) -> Option<String> {
    e.headers.get(name).cloned()
}

/// A Mobula error as S3's.
pub fn s3_err(e: ApiError) -> S3Error {
    let code = match e.code {
        Code::BucketNotFound => S3ErrorCode::NoSuchBucket,
        Code::ObjectNotFound | Code::ResourceNotFound => S3ErrorCode::NoSuchKey,
        Code::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
        Code::BucketAlreadyExists => S3ErrorCode::BucketAlreadyOwnedByYou,
        Code::InvalidBucketName => S3ErrorCode::InvalidBucketName,
        Code::KeyTooLong => S3ErrorCode::KeyTooLongError,
        Code::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        Code::ContentMD5Mismatch => S3ErrorCode::BadDigest,
        Code::MaxContentLengthExceeded => S3ErrorCode::EntityTooLarge,
        Code::UploadTimeout => S3ErrorCode::RequestTimeout,
        Code::RequestedRangeNotSatisfiable => S3ErrorCode::InvalidRange,
        Code::InvalidArgument | Code::InvalidDurabilityLevel => S3ErrorCode::InvalidArgument,
        Code::ServiceUnavailable | Code::NotEnoughSpace => S3ErrorCode::ServiceUnavailable,
        Code::AuthorizationFailed | Code::AccountDoesNotExist => S3ErrorCode::AccessDenied,
        Code::NotImplemented => S3ErrorCode::NotImplemented,
        Code::SourceObjectNotFound => S3ErrorCode::NoSuchKey,
        _ => S3ErrorCode::InternalError,
    };
    if code == S3ErrorCode::InternalError {
        tracing::error!("S3: {e}");
    }
    S3Error::with_message(code, e.message)
}

/// Put `<RequestId>` into an S3 error document that lacks one.
pub fn add_request_id(body: &[u8], id: &str) -> bytes::Bytes {
    let text = String::from_utf8_lossy(body);
    if text.contains("<RequestId>") || !text.contains("</Error>") {
        return bytes::Bytes::copy_from_slice(body);
    }
    bytes::Bytes::from(text.replacen(
        "</Error>",
        &format!("<RequestId>{id}</RequestId></Error>"),
        1,
    ))
}

/// What S3's URI encoding escapes: everything but unreserved characters (`/` too).
pub const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// [`ESCAPED`] but `/` (paths and keys).
pub const ESCAPED_BUT_SLASH: &percent_encoding::AsciiSet = &ESCAPED.remove(b'/');

/// S3's `EncodingType=url`: keys and prefixes percent-encoded (all but unreserved and `/`).
pub fn encode(s: &str, url: bool) -> String {
    if url {
        percent_encoding::utf8_percent_encode(s, ESCAPED_BUT_SLASH).to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_go_into_error_documents() {
        let b = add_request_id(b"<Error><Code>NoSuchKey</Code></Error>", "abc");
        assert_eq!(
            &b[..],
            b"<Error><Code>NoSuchKey</Code><RequestId>abc</RequestId></Error>"
        );
        let b = add_request_id(b"<Error><RequestId>x</RequestId></Error>", "abc");
        assert_eq!(&b[..], b"<Error><RequestId>x</RequestId></Error>");
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(encode("a b/c+d%é", true), "a%20b/c%2Bd%25%C3%A9");
        assert_eq!(encode("a b", false), "a b");
    }

    #[test]
    fn md5s_are_hex() {
        assert_eq!(
            md5_hex("1B2M2Y8AsgTpgAmY7PhCfg=="),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}
