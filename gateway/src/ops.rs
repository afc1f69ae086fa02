//! Names of the gateway's operations, for its request metrics (`mobula_requests_total{api,op}`).
//!
//! Owns one mapping: (method, path, headers, the answer's content type) → (API, operation), in
//! the words of Manta's API (`PutObject`, `ListDirectory`, `CreateJob`, …). The set of names is
//! closed — whatever a client sends, the label is one of these — so no request can grow the
//! metric's label space.

use http::{HeaderMap, Method};

use crate::path::ApiPath;

/// The special type a PUT's `content-type` names (`directory`, `link`), as a static name.
pub fn put_kind(headers: &HeaderMap) -> Option<&'static str> {
    match crate::headers::special_type(headers) {
        Some("directory") => Some("directory"),
        Some("link") => Some("link"),
        _ => None,
    }
}

/// The API (`manta` or `jobs`) and operation of a request; `put` is [`put_kind`] of its
/// headers, `resp_type` the answer's `content-type` (a GET of a directory is `ListDirectory`,
/// of an object `GetObject`).
pub fn classify(
    m: &Method,
    path: Option<&ApiPath>,
    put: Option<&str>,
    resp_type: Option<&str>,
) -> (&'static str, &'static str) {
    let Some(path) = path else {
        return ("manta", "Invalid");
    };
    let dir = resp_type.is_some_and(|t| t.contains("type=directory"));
    let area = path.area().unwrap_or("");
    let op = match (m.as_str(), path.depth(), area) {
        ("GET" | "HEAD", 1, _) => "ListAccount",
        (_, d, "jobs") if d >= 2 => return ("jobs", job_op(m, path)),
        (_, d, "uploads") if d > 2 || m == Method::POST => upload_op(m, path),
        (_, d, "buckets") if d >= 2 => bucket_op(m, path),
        ("GET", _, _) if dir => "ListDirectory",
        ("HEAD", _, _) if dir => "HeadDirectory",
        ("GET", _, _) => "GetObject",
        ("HEAD", _, _) => "HeadObject",
        ("PUT", _, _) => match put {
            Some("directory") => "PutDirectory",
            Some("link") => "PutSnapLink",
            _ => "PutObject",
        },
        ("DELETE", _, _) => "DeleteObject",
        ("OPTIONS", _, _) => "Options",
        _ => "Other",
    };
    ("manta", op)
}

fn job_op(m: &Method, path: &ApiPath) -> &'static str {
    let rest: Vec<&str> = path.parts.iter().skip(3).map(String::as_str).collect();
    match (m.as_str(), rest.as_slice()) {
        ("POST", []) if path.depth() == 2 => "CreateJob",
        ("GET" | "HEAD", []) if path.depth() == 2 => "ListJobs",
        ("GET" | "HEAD", []) => "GetJob",
        ("POST", ["live", "in"]) => "AddJobInputs",
        ("POST", ["live", "in", "end"]) => "EndJobInput",
        ("POST", ["live", "cancel"]) => "CancelJob",
        ("GET" | "HEAD", ["live", "status"]) => "GetJobStatus",
        ("GET" | "HEAD", ["live", "in"]) => "GetJobInput",
        ("GET" | "HEAD", ["live", "out"]) => "GetJobOutput",
        ("GET" | "HEAD", ["live", "fail"]) => "GetJobFailures",
        ("GET" | "HEAD", ["live", "err"]) => "GetJobErrors",
        ("GET" | "HEAD", _) => "GetJobObject",
        _ => "Other",
    }
}

fn upload_op(m: &Method, path: &ApiPath) -> &'static str {
    let last = path.parts.last().map(String::as_str).unwrap_or("");
    match m.as_str() {
        "POST" if path.depth() == 2 => "CreateUpload",
        "POST" if last == "commit" => "CommitUpload",
        "POST" if last == "abort" => "AbortUpload",
        "PUT" => "UploadPart",
        "GET" | "HEAD" => "GetUpload",
        _ => "Other",
    }
}

fn bucket_op(m: &Method, path: &ApiPath) -> &'static str {
    let object = path.bucket_key().is_some();
    match (m.as_str(), path.depth(), object) {
        ("GET" | "HEAD", 2, _) => "ListBuckets",
        ("PUT", 3, false) => "CreateBucket",
        ("HEAD", 3, false) => "HeadBucket",
        ("DELETE", 3, false) => "DeleteBucket",
        ("GET", _, false) => "ListBucketObjects",
        ("PUT", _, true) => "PutBucketObject",
        ("GET", _, true) => "GetBucketObject",
        ("HEAD", _, true) => "HeadBucketObject",
        ("DELETE", _, true) => "DeleteBucketObject",
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(m: Method, p: &str, dir: bool) -> (&'static str, &'static str) {
        let path = ApiPath::parse(p).ok();
        let t = dir.then_some("application/x-json-stream; type=directory");
        let mut h = HeaderMap::new();
        if p.ends_with("/d") && m == Method::PUT {
            h.insert(
                "content-type",
                "application/json; type=directory".parse().unwrap(),
            );
        }
        classify(&m, path.as_ref(), put_kind(&h), t)
    }

    #[test]
    fn names_follow_manta() {
        assert_eq!(op(Method::PUT, "/a/stor/x", false), ("manta", "PutObject"));
        assert_eq!(
            op(Method::PUT, "/a/stor/d", false),
            ("manta", "PutDirectory")
        );
        assert_eq!(op(Method::GET, "/a/stor/x", false), ("manta", "GetObject"));
        assert_eq!(op(Method::GET, "/a/stor", true), ("manta", "ListDirectory"));
        assert_eq!(
            op(Method::DELETE, "/a/stor/x", false),
            ("manta", "DeleteObject")
        );
        assert_eq!(op(Method::POST, "/a/jobs", false), ("jobs", "CreateJob"));
        assert_eq!(
            op(Method::GET, "/a/jobs/j1/live/status", false),
            ("jobs", "GetJobStatus")
        );
        assert_eq!(
            op(Method::POST, "/a/jobs/j1/live/in/end", false),
            ("jobs", "EndJobInput")
        );
        assert_eq!(
            op(Method::PUT, "/a/buckets/b", false),
            ("manta", "CreateBucket")
        );
        assert_eq!(
            op(Method::PUT, "/a/buckets/b/objects/k/x", false),
            ("manta", "PutBucketObject")
        );
        assert_eq!(op(Method::GET, "/a/stor/..", false), ("manta", "Invalid"));
        assert_eq!(op(Method::PUT, "no-slash", false), ("manta", "Invalid"));
    }
}
