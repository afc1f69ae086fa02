//! The hand-written SigV4 check against AWS's own published examples (S3 API reference,
//! "Signature Calculations for the Authorization Header" and "Query String Authentication").

use http::HeaderMap;

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn aws_get_object() -> HeaderMap {
    headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    ])
}

#[test]
fn aws_header_example_verifies_and_a_changed_byte_does_not() {
    let h = aws_get_object();
    let c = from_headers(&h).expect("a well-formed claim");
    assert_eq!(c.access_key, "AKIAIOSFODNN7EXAMPLE");
    assert_eq!(c.region, "us-east-1");
    let keys = SigningKeys::default();
    let canon = canonical_request("/test.txt", &[], &h, &c).unwrap();
    assert!(keys.verify(&c, SECRET, &canon));
    // Twice: the second from the cached signing key.
    assert!(keys.verify(&c, SECRET, &canon));
    assert!(!keys.verify(&c, "another secret", &canon));
    let other = canonical_request("/test.txT", &[], &h, &c).unwrap();
    assert!(!keys.verify(&c, SECRET, &other));
    let mut h2 = h.clone();
    h2.insert("range", "bytes=0-10".parse().unwrap());
    let canon2 = canonical_request("/test.txt", &[], &h2, &c).unwrap();
    assert!(!keys.verify(&c, SECRET, &canon2));
}

#[test]
fn aws_presigned_example_verifies() {
    let q: Vec<(String, String)> = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        (
            "X-Amz-Credential",
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
        ),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", "86400"),
        ("X-Amz-SignedHeaders", "host"),
        (
            "X-Amz-Signature",
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (c, expires) = from_query(&q).unwrap();
    assert_eq!(expires, 86400);
    let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let canon = canonical_request("/test.txt", &q, &h, &c).unwrap();
    assert!(SigningKeys::default().verify(&c, SECRET, &canon));
    // The URL's time rules.
    let t = amz_time("20130524T000000Z").unwrap();
    assert_eq!(t, 1_369_353_600);
    assert!(in_time(c.amz_date, Some(expires), t + 86400));
    assert!(!in_time(c.amz_date, Some(expires), t + 86401));
    assert!(!in_time(c.amz_date, Some(expires), t - MAX_SKEW_SECS - 1));
    assert!(in_time(c.amz_date, None, t + MAX_SKEW_SECS));
    assert!(!in_time(c.amz_date, None, t - MAX_SKEW_SECS - 1));
}

#[test]
fn claims_outside_the_strict_subset_are_not_made() {
    let base = aws_get_object();
    let auth = base["authorization"].to_str().unwrap().to_string();
    let with = |name: &str, v: &str| {
        let mut h = base.clone();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        h
    };
    // Another service, a missing `host`, unsorted names, a short signature, a day that is
    // not the date's, a streaming payload, a repeated field, SigV2.
    for bad in [
        auth.replace("/s3/", "/sts/"),
        auth.replace("host;", ""),
        auth.replace("host;range", "range;host"),
        auth.replace("Signature=f0", "Signature="),
        auth.replace("20130524/", "20130525/"),
        format!("{auth},Signature=00"),
        "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=".to_string(),
    ] {
        assert!(
            from_headers(&with("authorization", &bad)).is_none(),
            "{bad}"
        );
    }
    assert!(from_headers(&with(
        "x-amz-content-sha256",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    ))
    .is_none());
    let mut twice = base.clone();
    twice.append("x-amz-date", "20130524T000000Z".parse().unwrap());
    assert!(from_headers(&twice).is_none());
    // A signed header sent twice is not canonicalised here (s3s decides).
    let c = from_headers(&base).unwrap();
    let mut h = base.clone();
    h.append("range", "bytes=0-1".parse().unwrap());
    assert!(canonical_request("/test.txt", &[], &h, &c).is_none());
    for bad in [
        "2013052T000000Z",
        "20131324T000000Z",
        "20130524T250000Z",
        "20130524 000000Z",
    ] {
        assert!(amz_time(bad).is_none(), "{bad}");
    }
}

#[test]
fn values_and_paths_are_canonicalised_as_s3_does() {
    let mut s = String::new();
    uri_encode(&mut s, "/a b/ü~x.y_-z+", true);
    assert_eq!(s, "/a%20b/%C3%BC~x.y_-z%2B");
    s.clear();
    uri_encode(&mut s, "a/b", false);
    assert_eq!(s, "a%2Fb");
    let mut v = String::new();
    push_value(&mut v, "  a   b \t c ");
    assert_eq!(v, "a b c");
}
