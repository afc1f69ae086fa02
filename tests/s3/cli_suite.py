"""The AWS CLI, s3cmd and rclone against Mobula's S3 listener (run by tests/e2e/s3.rs).

Environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; S3_CLIENT is one of
aws | s3cmd | rclone; S3_TAG prefixes bucket names; AWS_CLI is the aws binary to run. Each
client does real round trips and the bytes are compared; the last line printed is "ok".
"""

import filecmp
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse

EP = os.environ["AWS_ENDPOINT_URL"]
AK = os.environ["AWS_ACCESS_KEY_ID"]
SK = os.environ["AWS_SECRET_ACCESS_KEY"]
TAG = os.environ.get("S3_TAG", "c")
CLIENT = os.environ["S3_CLIENT"]
HOST = urllib.parse.urlparse(EP).netloc


def run(*args, env=None):
    e = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", **(env or {}))
    # The AWS SDK inside rclone fails on a custom CA bundle for plain HTTP; none is needed.
    e.pop("AWS_CA_BUNDLE", None)
    r = subprocess.run(args, capture_output=True, text=True, env=e, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def tree(root):
    files = {}
    for i in range(25):
        rel = f"d{i % 3}/sub{i % 2}/f{i}.txt" if i % 4 else f"top{i}.bin"
        data = hashlib.sha256(str(i).encode()).hexdigest().encode() * (i + 1)
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        files[rel] = data
    return files


def same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        if c.left_only or c.right_only or c.diff_files or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        if mismatch or errors:
            return False
        stack.extend(c.subdirs.values())
    return True


def aws_cli(tmp):
    aws = os.environ.get("AWS_CLI", "aws")
    a = lambda *x: run(aws, "--endpoint-url", EP, *x)
    b = f"s3://{TAG}-aws"
    a("s3", "mb", b)
    big = os.path.join(tmp, "big.bin")
    with open(big, "wb") as f:
        for i in range(100):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    a("s3", "cp", big, f"{b}/big.bin")
    back = os.path.join(tmp, "big.back")
    a("s3", "cp", f"{b}/big.bin", back)
    assert filecmp.cmp(big, back, shallow=False), "100 MiB round trip"
    head = json.loads(a("s3api", "head-object", "--bucket", f"{TAG}-aws", "--key", "big.bin"))
    assert head["ContentLength"] == 100 << 20, head
    assert head["ETag"].strip('"').endswith(f"-{(100 << 20) // (8 << 20) + 1}"), head
    src = os.path.join(tmp, "tree")
    tree(src)
    a("s3", "sync", src, f"{b}/tree")
    out = os.path.join(tmp, "tree.back")
    a("s3", "sync", f"{b}/tree", out)
    assert same_tree(src, out), "sync both ways"
    listed = [l.split()[-1] for l in a("s3", "ls", "--recursive", b).splitlines()]
    assert len(listed) == 26 and "big.bin" in listed and "tree/d1/sub1/f1.txt" in listed, listed
    # A second sync moves nothing.
    assert a("s3", "sync", src, f"{b}/tree").strip() == "", "sync is idempotent"
    a("s3", "rm", "--recursive", b)
    assert a("s3", "ls", "--recursive", b).strip() == "", "rm --recursive"
    a("s3", "rb", b)


def s3cmd(tmp):
    base = ["s3cmd", f"--access_key={AK}", f"--secret_key={SK}", f"--host={HOST}",
            f"--host-bucket={HOST}", "--no-ssl", "--region=us-east-1", "--config=/dev/null"]
    c = lambda *x: run(*base, *x)
    b = f"s3://{TAG}-s3cmd"
    c("mb", b)
    src = os.path.join(tmp, "one.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(3 << 20))
    c("put", src, f"{b}/dir/one.bin")
    back = os.path.join(tmp, "one.back")
    c("get", f"{b}/dir/one.bin", back)
    assert filecmp.cmp(src, back, shallow=False), "s3cmd round trip"
    assert "dir/one.bin" in c("ls", "--recursive", b), "s3cmd ls"
    c("del", f"{b}/dir/one.bin")
    assert c("ls", "--recursive", b).strip() == "", "s3cmd del"
    c("rb", b)


def rclone(tmp):
    env = {
        "RCLONE_CONFIG_MOB_TYPE": "s3",
        "RCLONE_CONFIG_MOB_PROVIDER": "Other",
        "RCLONE_CONFIG_MOB_ENDPOINT": EP,
        "RCLONE_CONFIG_MOB_ACCESS_KEY_ID": AK,
        "RCLONE_CONFIG_MOB_SECRET_ACCESS_KEY": SK,
        "RCLONE_CONFIG_MOB_REGION": "us-east-1",
        "RCLONE_CONFIG": "/dev/null",
    }
    r = lambda *x: run("rclone", *x, env=env)
    b = f"mob:{TAG}-rclone"
    r("mkdir", b)
    src = os.path.join(tmp, "tree")
    files = tree(src)
    r("copy", src, f"{b}/tree")
    r("check", src, f"{b}/tree")
    listed = sorted(r("lsf", "-R", "--files-only", f"{b}/tree").split())
    assert listed == sorted(files), listed
    r("delete", f"{b}/tree")
    assert r("lsf", "-R", f"{b}").strip() == "", "rclone delete"
    r("rmdir", b)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        {"aws": aws_cli, "s3cmd": s3cmd, "rclone": rclone}[CLIENT](tmp)
    print(CLIENT, "ok")


if __name__ == "__main__":
    main()
