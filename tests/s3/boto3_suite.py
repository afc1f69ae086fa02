"""Real boto3 against Mobula's S3 listener (tests/e2e/s3.rs runs it with the newest boto3 from
PyPI and with Debian's older python3-boto3, over HTTP and HTTPS).

Environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the test account),
OTHER_BUCKET (a bucket of another account), S3_CA (CA file, for HTTPS), S3_PART (which part of the
suite: all | tls | bad). Every check raises on failure; the last line printed is "ok".
"""

import base64
import concurrent.futures as cf
import datetime as real_datetime
import hashlib
import hmac
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore
from botocore.config import Config

EP = os.environ["AWS_ENDPOINT_URL"]
CA = os.environ.get("S3_CA") or None
PART = os.environ.get("S3_PART", "all")
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
TAG = os.environ.get("S3_TAG", "t")


def client(sig=None, **kw):
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}, region_name="us-east-1",
                 signature_version=sig)
    return boto3.client("s3", endpoint_url=EP, verify=CA, config=cfg, **kw)


s3 = client()
# Presigned URLs with SigV4 (boto3's default presigner for a custom endpoint may be SigV2).
ps = client(sig="s3v4")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def err(fn):
    """The S3 error code `fn` fails with (None if it succeeds)."""
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None


def with_header(name, value, op):
    """Run `op` with an extra header on its request (works with old boto3 lacking the param)."""

    def add(request, **kw):
        request.headers[name] = value

    s3.meta.events.register("before-sign.s3.*", add)
    try:
        return op()
    finally:
        s3.meta.events.unregister("before-sign.s3.*", add)


def basics(b):
    check(err(lambda: s3.create_bucket(Bucket=b)) is None, "create bucket")
    check(b in [x["Name"] for x in s3.list_buckets()["Buckets"]], "bucket listed")
    s3.head_bucket(Bucket=b)
    check(err(lambda: s3.create_bucket(Bucket=b)) == "BucketAlreadyOwnedByYou", "create twice")
    body = os.urandom(100_000)
    s3.put_object(Bucket=b, Key="dir/obj.bin", Body=body, ContentType="application/x-test",
                  Metadata={"colour": "blue"})
    r = s3.get_object(Bucket=b, Key="dir/obj.bin")
    check(r["Body"].read() == body, "GET bytes")
    check(r["ETag"].strip('"') == hashlib.md5(body).hexdigest(), "ETag is the MD5")
    check(r["ContentType"] == "application/x-test", "content type")
    check(r["Metadata"] == {"colour": "blue"}, "metadata")
    h = s3.head_object(Bucket=b, Key="dir/obj.bin")
    check(h["ContentLength"] == len(body), "HEAD length")
    when = real_datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=real_datetime.timezone.utc)
    s3.put_object(Bucket=b, Key="headers", Body=b"h", CacheControl="max-age=60",
                  ContentDisposition="attachment", ContentLanguage="fr", Expires=when)
    h = s3.head_object(Bucket=b, Key="headers")
    check(h["CacheControl"] == "max-age=60" and h["ContentDisposition"] == "attachment"
          and h["ContentLanguage"] == "fr", f"content headers {h}")
    check(h.get("Expires") == when or h.get("ExpiresString", "").startswith("Wed, 02 Jan 2030"),
          f"Expires {h.get('Expires')} {h.get('ExpiresString')}")
    r = s3.get_object(Bucket=b, Key="dir/obj.bin", Range="bytes=10-19")
    check(r["Body"].read() == body[10:20], "Range")
    check(r["ContentRange"] == "bytes 10-19/100000", "Content-Range")
    check(err(lambda: s3.get_object(Bucket=b, Key="nope")) == "NoSuchKey", "NoSuchKey")
    check(err(lambda: s3.get_object(Bucket=b + "-nope", Key="x")) == "NoSuchBucket", "NoSuchBucket")
    s3.delete_object(Bucket=b, Key="dir/obj.bin")
    check(err(lambda: s3.head_object(Bucket=b, Key="dir/obj.bin")) in ("404", "NoSuchKey"), "deleted")
    check(s3.get_bucket_versioning(Bucket=b).get("Status") is None, "versioning never enabled")
    s3.get_bucket_location(Bucket=b)


def model(keys, prefix, delim):
    out = []
    for k in sorted(keys, key=lambda s: s.encode()):
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if delim and delim in rest:
            cp = prefix + rest[: rest.index(delim) + len(delim)]
            if not out or out[-1] != ("P", cp):
                out.append(("P", cp))
        else:
            out.append(("K", k))
    return out


def listing(b):
    s3.create_bucket(Bucket=b)
    keys = [f"d{i % 7}/s{i % 5}/k{i:05d}" for i in range(2000)]
    keys += [f"top{i:03d}" for i in range(60)] + ["a b+c%d/é", "d1/", "d1//x"]
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: s3.put_object(Bucket=b, Key=k, Body=k.encode()), keys))
    for prefix, delim, page in [("", "/", 3), ("", "", 137), ("d1/", "/", 2), ("d2/s3/", "", 100),
                                ("d", "/", 1000), ("top", "", 7), ("zz", "/", 10)]:
        got = []
        kw = dict(Bucket=b, Prefix=prefix, MaxKeys=page)
        if delim:
            kw["Delimiter"] = delim
        while True:
            r = s3.list_objects_v2(**kw)
            items = [("K", o["Key"]) for o in r.get("Contents", [])]
            items += [("P", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
            check(r["KeyCount"] == len(items), "KeyCount")
            check(len(items) <= page, "page size")
            got += sorted(items, key=lambda t: t[1].encode())
            if not r["IsTruncated"]:
                break
            kw["ContinuationToken"] = r["NextContinuationToken"]
        want = model(keys, prefix, delim)
        check(got == want, f"ListObjectsV2 {prefix!r} {delim!r} {page}: {len(got)} vs {len(want)}")
    # V1 through boto3's paginator (markers), and versions.
    got = []
    for p in s3.get_paginator("list_objects").paginate(Bucket=b, Prefix="d3/", PaginationConfig={"PageSize": 50}):
        got += [o["Key"] for o in p.get("Contents", [])]
    check(got == [k for _, k in model(keys, "d3/", "")], "ListObjects V1")
    v = s3.list_object_versions(Bucket=b, Prefix="top00")
    check([x["VersionId"] for x in v["Versions"]] == ["null"] * 10, "versions")
    # Batch delete, 1000 at a time.
    for i in range(0, len(keys), 1000):
        r = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        check(len(r.get("Deleted", [])) == len(keys[i:i + 1000]), "batch delete")
    check(s3.list_objects_v2(Bucket=b)["KeyCount"] == 0, "all deleted")


def multipart(b, key="mp"):
    parts = [os.urandom(5 << 20), os.urandom(5 << 20), os.urandom(1234)]
    up = s3.create_multipart_upload(Bucket=b, Key=key, Metadata={"m": "1"})
    done = []
    for n, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=p)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    ups = s3.list_multipart_uploads(Bucket=b).get("Uploads", [])
    check(any(u["UploadId"] == up["UploadId"] for u in ups), "upload listed")
    other = s3.create_multipart_upload(Bucket=b, Key="mpdir/x")
    r = s3.list_multipart_uploads(Bucket=b, Delimiter="/")
    check([p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["mpdir/"], f"upload groups {r}")
    check([u["Key"] for u in r.get("Uploads", [])] == [key], "uploads outside groups")
    s3.abort_multipart_upload(Bucket=b, Key="mpdir/x", UploadId=other["UploadId"])
    lp = s3.list_parts(Bucket=b, Key=key, UploadId=up["UploadId"])["Parts"]
    check([p["Size"] for p in lp] == [len(p) for p in parts], "parts listed")
    r = s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": done})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    want = f"{hashlib.md5(md5s).hexdigest()}-3"
    check(r["ETag"].strip('"') == want, "multipart ETag")
    g = s3.get_object(Bucket=b, Key=key)
    check(g["Body"].read() == b"".join(parts), "multipart bytes")
    check(g["ETag"].strip('"') == want and g["Metadata"] == {"m": "1"}, "multipart object")
    # Abort leaves nothing.
    up = s3.create_multipart_upload(Bucket=b, Key=key + "-aborted")
    s3.upload_part(Bucket=b, Key=key + "-aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=b, Key=key + "-aborted", UploadId=up["UploadId"])
    check(err(lambda: s3.list_parts(Bucket=b, Key=key + "-aborted", UploadId=up["UploadId"])) == "NoSuchUpload", "aborted")


def copy_and_presign(b):
    s3.put_object(Bucket=b, Key="copy-src", Body=b"copied bytes", Metadata={"a": "b"})
    s3.copy_object(Bucket=b, Key="copy-dst", CopySource={"Bucket": b, "Key": "copy-src"})
    r = s3.get_object(Bucket=b, Key="copy-dst")
    check(r["Body"].read() == b"copied bytes" and r["Metadata"] == {"a": "b"}, "copy")
    s3.copy_object(Bucket=b, Key="copy-new-meta", CopySource={"Bucket": b, "Key": "copy-src"},
                   MetadataDirective="REPLACE", Metadata={"c": "d"}, ContentType="text/x")
    h = s3.head_object(Bucket=b, Key="copy-new-meta")
    check(h["Metadata"] == {"c": "d"} and h["ContentType"] == "text/x", "copy REPLACE")
    # UploadPartCopy of a whole object.
    up = s3.create_multipart_upload(Bucket=b, Key="upc")
    r = s3.upload_part_copy(Bucket=b, Key="upc", UploadId=up["UploadId"], PartNumber=1,
                            CopySource={"Bucket": b, "Key": "copy-src"})
    s3.complete_multipart_upload(Bucket=b, Key="upc", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]})
    check(s3.get_object(Bucket=b, Key="upc")["Body"].read() == b"copied bytes", "upload part copy")
    # Presigned GET and PUT with plain HTTP.
    ctx = None
    if CA:
        import ssl
        ctx = ssl.create_default_context(cafile=CA)
    for signer in (ps, s3):
        url = signer.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "presigned"}, ExpiresIn=60)
        # No Content-Type: urllib would add one the signature did not cover.
        req = urllib.request.Request(url, data=b"via presigned PUT", method="PUT", headers={"Content-Type": ""})
        urllib.request.urlopen(req, context=ctx).read()
        url = signer.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned"}, ExpiresIn=60)
        check(urllib.request.urlopen(url, context=ctx).read() == b"via presigned PUT", "presigned GET")


def race(b):
    rc = client()

    def inm(request, **kw):
        request.headers["If-None-Match"] = "*"

    rc.meta.events.register("before-sign.s3.PutObject", inm, unique_id="race-inm")

    def one(i):
        return err(lambda: rc.put_object(Bucket=b, Key="raced", Body=f"writer {i}".encode()))
    with cf.ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(one, range(16)))
    rc.meta.events.unregister("before-sign.s3.PutObject", unique_id="race-inm")
    check(codes.count(None) == 1, f"exactly one writer wins: {codes}")
    check(all(c in (None, "PreconditionFailed") for c in codes), f"losers get 412: {codes}")
    body = s3.get_object(Bucket=b, Key="raced")["Body"].read()
    check(body == f"writer {codes.index(None)}".encode(), "the winner's bytes")
    etag = s3.head_object(Bucket=b, Key="raced")["ETag"]
    check(err(lambda: with_header("If-Match", '"0000"', lambda: s3.put_object(Bucket=b, Key="raced", Body=b"x")))
          == "PreconditionFailed", "If-Match mismatch")
    with_header("If-Match", etag, lambda: s3.put_object(Bucket=b, Key="raced", Body=b"y"))
    check(s3.get_object(Bucket=b, Key="raced")["Body"].read() == b"y", "If-Match write")


def raw_code(resp_body):
    text = resp_body.decode(errors="replace")
    if "<Code>" not in text:
        return text[:200]
    return text.split("<Code>")[1].split("</Code>")[0]


def http_code(url, method="GET", data=None):
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=data, method=method)).read()
        return None
    except urllib.error.HTTPError as e:
        body = e.read()
        check("<RequestId>" in body.decode(errors="replace"), "error XML carries a request id")
        return raw_code(body)


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def chunked_put(b, key, chunks, tamper, trailer=None, tamper_trailer=False):
    """A signed aws-chunked PUT built by hand: STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or with
    `trailer` (a CRC32 value) STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER with a signed trailer.
    `tamper` breaks chunk 2's signature, `tamper_trailer` the trailer's."""
    u = urllib.parse.urlparse(EP)
    now = real_datetime.datetime.now(real_datetime.timezone.utc)
    amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    total = sum(len(c) for c in chunks)
    path = f"/{b}/{key}"
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    headers = {"host": u.netloc, "x-amz-content-sha256": mode,
               "x-amz-date": amz, "x-amz-decoded-content-length": str(total),
               "content-encoding": "aws-chunked"}
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    names = sorted(headers)
    canonical = "\n".join(["PUT", path, "", *[f"{n}:{headers[n]}" for n in names], "",
                           ";".join(names), mode])
    k = sign(sign(sign(sign(("AWS4" + SK).encode(), day), "us-east-1"), "s3"), "aws4_request")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    prev = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={prev}")
    body = b""
    for i, c in enumerate(list(chunks) + [b""]):
        s = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz, scope, prev,
                       hashlib.sha256(b"").hexdigest(), hashlib.sha256(c).hexdigest()])
        prev = hmac.new(k, s.encode(), hashlib.sha256).hexdigest()
        shown = ("0" * 64) if (tamper and i == 1) else prev
        body += f"{len(c):x};chunk-signature={shown}\r\n".encode() + c + b"\r\n"
    if trailer:
        canon = f"x-amz-checksum-crc32:{trailer}\n"
        s = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz, scope, prev,
                       hashlib.sha256(canon.encode()).hexdigest()])
        tsig = hmac.new(k, s.encode(), hashlib.sha256).hexdigest()
        if tamper_trailer:
            tsig = "0" * 64
        body += f"x-amz-checksum-crc32:{trailer}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    headers["content-length"] = str(len(body))
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("PUT", path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def signed_put(b, key, data, when):
    """A PUT signed by hand (SigV4, single chunk) as of time `when`."""
    u = urllib.parse.urlparse(EP)
    amz, day = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/s3/aws4_request"
    path = f"/{b}/{key}"
    sha = hashlib.sha256(data).hexdigest()
    headers = {"host": u.netloc, "x-amz-content-sha256": sha, "x-amz-date": amz}
    names = sorted(headers)
    canonical = "\n".join(["PUT", path, "", *[f"{n}:{headers[n]}" for n in names], "", ";".join(names), sha])
    k = sign(sign(sign(sign(("AWS4" + SK).encode(), day), "us-east-1"), "s3"), "aws4_request")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={sig}")
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("PUT", path, body=data, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def bad_input(b):
    other = os.environ.get("OTHER_BUCKET")
    s3.create_bucket(Bucket=b)
    wrong = client(aws_access_key_id=AK, aws_secret_access_key=SK[:-1] + ("A" if SK[-1] != "A" else "B"))
    check(err(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch", "wrong secret")
    check(err(lambda: wrong.put_object(Bucket=b, Key="w", Body=b"x")) == "SignatureDoesNotMatch", "wrong secret PUT")
    unknown = client(aws_access_key_id="MBNOTAKEY0000000000", aws_secret_access_key=SK)
    check(err(lambda: unknown.list_buckets()) == "InvalidAccessKeyId", "unknown key")
    # A clock an hour behind (signed by hand: the clock boto3 reads differs between versions).
    past = real_datetime.datetime.now(real_datetime.timezone.utc) - real_datetime.timedelta(hours=1)
    st, body = signed_put(b, "skew", b"x", past)
    check(st == 403 and raw_code(body) == "RequestTimeTooSkewed", f"skewed date: {st} {body[:200]}")
    st, body = signed_put(b, "now", b"x", real_datetime.datetime.now(real_datetime.timezone.utc))
    check(st == 200, f"a hand-signed PUT: {st} {body[:200]}")
    # Presigned URLs: expired, tampered signature, tampered key.
    s3.put_object(Bucket=b, Key="p", Body=b"presigned")
    url = ps.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=1)
    time.sleep(2)
    check(http_code(url) == "AccessDenied", "expired presigned URL")
    url = ps.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=60)
    i = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    bad = url[:i] + ("0" if url[i] != "0" else "1") + url[i + 1:]
    check(http_code(bad) == "SignatureDoesNotMatch", "tampered presigned signature")
    check(http_code(url.replace("/p?", "/q?")) == "SignatureDoesNotMatch", "tampered presigned key")
    # aws-chunked: a correct signed stream is stored; a tampered chunk signature stores nothing.
    st, body = chunked_put(b, "chunked-ok", [b"a" * 70000, b"b" * 100], tamper=False)
    check(st == 200, f"signed aws-chunked PUT: {st} {body[:300]}")
    check(s3.get_object(Bucket=b, Key="chunked-ok")["Body"].read() == b"a" * 70000 + b"b" * 100, "chunked bytes")
    st, body = chunked_put(b, "chunked-bad", [b"a" * 70000, b"b" * 100], tamper=True)
    check(st == 403 and raw_code(body) == "SignatureDoesNotMatch", f"tampered chunk: {st} {body[:300]}")
    check(err(lambda: s3.head_object(Bucket=b, Key="chunked-bad")) in ("404", "NoSuchKey"), "nothing stored")
    # aws-chunked, signed, with a signed trailing CRC32: right, wrong, and a tampered trailer.
    import zlib
    data = [b"t" * 70000, b"u" * 10]
    crc = base64.b64encode(zlib.crc32(b"".join(data)).to_bytes(4, "big")).decode()
    st, body = chunked_put(b, "trailer-ok", data, tamper=False, trailer=crc)
    check(st == 200, f"signed aws-chunked with trailer: {st} {body[:300]}")
    r = s3.head_object(Bucket=b, Key="trailer-ok", ChecksumMode="ENABLED")
    check(r.get("ChecksumCRC32") == crc, f"the trailer's CRC32 kept: {r.get('ChecksumCRC32')} vs {crc}")
    st, body = chunked_put(b, "trailer-bad", data, tamper=False, trailer="AAAAAA==")
    check(st == 400 and raw_code(body) == "BadDigest", f"wrong trailing CRC32: {st} {body[:300]}")
    st, body = chunked_put(b, "trailer-forged", data, tamper=False, trailer=crc, tamper_trailer=True)
    check(st == 403 and raw_code(body) == "SignatureDoesNotMatch", f"tampered trailer: {st} {body[:300]}")
    for k in ("trailer-bad", "trailer-forged"):
        check(err(lambda: s3.head_object(Bucket=b, Key=k)) in ("404", "NoSuchKey"), f"{k}: nothing stored")
    # Digests.
    other_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    check(err(lambda: s3.put_object(Bucket=b, Key="md5", Body=b"body", ContentMD5=other_md5)) == "BadDigest",
          "Content-MD5 mismatch")
    check(err(lambda: s3.put_object(Bucket=b, Key="crc", Body=b"body", ChecksumCRC32="AAAAAA==")) == "BadDigest",
          "x-amz-checksum-crc32 mismatch")
    check(err(lambda: s3.put_object(Bucket=b, Key="sha", Body=b"body",
                                     ChecksumSHA256=base64.b64encode(hashlib.sha256(b"x").digest()).decode()))
          == "BadDigest", "x-amz-checksum-sha256 mismatch")
    for k in ("md5", "crc", "sha"):
        check(err(lambda: s3.head_object(Bucket=b, Key=k)) in ("404", "NoSuchKey"), f"{k}: nothing stored")
    good = base64.b64encode(hashlib.sha256(b"body").digest()).decode()
    s3.put_object(Bucket=b, Key="sha-ok", Body=b"body", ChecksumSHA256=good)
    r = s3.head_object(Bucket=b, Key="sha-ok", ChecksumMode="ENABLED")
    check(r.get("ChecksumSHA256") == good, "checksum returned when asked")
    # A truncated body (presigned PUT over a raw socket, connection closed early).
    url = urllib.parse.urlparse(ps.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "trunc"}))
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 1000\r\n\r\n".encode()
                 + b"x" * 10)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(4096)
    sock.close()
    time.sleep(0.5)
    check(err(lambda: s3.head_object(Bucket=b, Key="trunc")) in ("404", "NoSuchKey"), "truncated: nothing stored")
    # Names.
    for name in ("Bad_Name", "ab", "a..b", "-ab"):
        check(err(lambda: s3.create_bucket(Bucket=name)) == "InvalidBucketName", f"bucket name {name}")
    check(err(lambda: s3.put_object(Bucket=b, Key="k" * 1025, Body=b"x")) == "KeyTooLongError", "key too long")
    s3.put_object(Bucket=b, Key="k" * 1024, Body=b"x")
    # Multipart rules.
    up = s3.create_multipart_upload(Bucket=b, Key="small")
    e = [s3.upload_part(Bucket=b, Key="small", UploadId=up["UploadId"], PartNumber=n, Body=b"tiny")["ETag"]
         for n in (1, 2)]
    parts = [{"PartNumber": 1, "ETag": e[0]}, {"PartNumber": 2, "ETag": e[1]}]
    check(err(lambda: s3.complete_multipart_upload(Bucket=b, Key="small", UploadId=up["UploadId"],
                                                  MultipartUpload={"Parts": parts})) == "EntityTooSmall", "EntityTooSmall")
    wrong_tag = [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]
    check(err(lambda: s3.complete_multipart_upload(Bucket=b, Key="small", UploadId=up["UploadId"],
                                                  MultipartUpload={"Parts": wrong_tag})) == "InvalidPart", "InvalidPart")
    check(err(lambda: s3.head_object(Bucket=b, Key="small")) in ("404", "NoSuchKey"), "no object")
    s3.abort_multipart_upload(Bucket=b, Key="small", UploadId=up["UploadId"])
    # Another account's bucket is not ours to see.
    if other:
        check(err(lambda: s3.head_bucket(Bucket=other)) in ("404", "NoSuchBucket"), "other's bucket: head")
        check(err(lambda: s3.get_object(Bucket=other, Key="secret")) == "NoSuchBucket", "other's bucket: get")
        check(err(lambda: s3.list_objects_v2(Bucket=other)) == "NoSuchBucket", "other's bucket: list")
        check(err(lambda: s3.put_object(Bucket=other, Key="x", Body=b"x")) == "NoSuchBucket", "other's bucket: put")
        check(other not in [x["Name"] for x in s3.list_buckets()["Buckets"]], "other's bucket not listed")
    # Something not implemented says so.
    check(err(lambda: s3.get_bucket_policy(Bucket=b)) == "NotImplemented", "NotImplemented")


def vhost(b):
    """Virtual-host-style addressing (`--s3-domain`): the bucket is in the Host header."""
    dom = os.environ["S3_DOMAIN"]
    port = urllib.parse.urlparse(EP).port
    cfg = Config(s3={"addressing_style": "virtual"}, signature_version="s3v4", region_name="us-east-1")
    v = boto3.client("s3", endpoint_url=f"http://{dom}:{port}", config=cfg)
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="vh/k", Body=b"virtual")
    for method, body in (("PUT", b"virtual put"), ("GET", None)):
        op = "put_object" if method == "PUT" else "get_object"
        url = urllib.parse.urlparse(v.generate_presigned_url(op, Params={"Bucket": b, "Key": "vh/k"}))
        check(url.hostname == f"{b}.{dom}" and url.path == "/vh/k", f"virtual-host URL {url}")
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request(method, f"{url.path}?{url.query}", body=body, headers={"Host": url.netloc})
        r = conn.getresponse()
        got = r.read()
        check(r.status == 200, f"{method} by virtual host: {r.status} {got[:200]}")
    check(got == b"virtual put", "virtual-host GET")


def main():
    if PART == "vhost":
        vhost(f"{TAG}-vhost")
    if PART == "tls":
        # Over HTTPS, boto3 >= 1.36 streams unsigned aws-chunked bodies with a trailing CRC32.
        seen = []
        s3.meta.events.register("before-send.s3.PutObject",
                                lambda request, **kw: seen.append(dict(request.headers)))
        s3.create_bucket(Bucket=f"{TAG}-chunked")
        s3.put_object(Bucket=f"{TAG}-chunked", Key="k", Body=b"trailing checksum" * 1000)
        h = {k.lower(): v for k, v in seen[-1].items()}
        new_sdk = tuple(int(x) for x in boto3.__version__.split(".")[:2]) >= (1, 36)
        if new_sdk:
            check(h.get("x-amz-trailer") == b"x-amz-checksum-crc32" or h.get("x-amz-trailer") == "x-amz-checksum-crc32",
                  f"boto3 sent a trailer: {h}")
        r = s3.get_object(Bucket=f"{TAG}-chunked", Key="k", ChecksumMode="ENABLED")
        check(r["Body"].read() == b"trailing checksum" * 1000, "aws-chunked bytes")
        if new_sdk:
            check(r.get("ChecksumCRC32") is not None, "the trailing CRC32 was kept and returned")
    if PART in ("all", "tls"):
        b = f"{TAG}-main"
        basics(b)
        multipart(b)
        copy_and_presign(b)
        if PART == "all":
            listing(f"{TAG}-list")
            race(b)
            s3.create_bucket(Bucket=f"{TAG}-keep")
            s3.put_object(Bucket=f"{TAG}-keep", Key="copy-src", Body=b"shared")
            s3.copy_object(Bucket=f"{TAG}-keep", Key="copy-dst",
                           CopySource={"Bucket": f"{TAG}-keep", "Key": "copy-src"})
        # Empty the bucket and delete it.
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket=b):
            for o in p.get("Contents", []):
                s3.delete_object(Bucket=b, Key=o["Key"])
        s3.delete_bucket(Bucket=b)
        check(err(lambda: s3.head_bucket(Bucket=b)) in ("404", "NoSuchBucket"), "bucket deleted")
    if PART == "bad":
        bad_input(f"{TAG}-bad")
    print("boto3", boto3.__version__, "ok")


if __name__ == "__main__":
    main()
