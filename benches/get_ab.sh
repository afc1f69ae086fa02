#!/bin/bash
# A/B of two `mobula` builds on a 4 KiB GET, via the Manta API and via a presigned S3 URL:
# `wrk -t1 -c32 -d6s` on one object, server CPU per request from /proc, the builds alternated.
#   benches/get_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Needs wrk (apt-get install wrk) and boto3 (Debian's python3-boto3) to presign (SigV4: boto3
# presigns with SigV2 for a custom endpoint unless told). A binary may be a wrapper script, e.g.
# one that runs mobula with MOBULA_S3_FAST_GET=0 to A/B the S3 GET fast path.
set -eu
old=$1 new=$2 rounds=${3:-3}
dir=$(mktemp -d /var/tmp/mobula-get-ab.XXXX)
trap 'pkill -f "$dir/d --listen" || true; rm -rf "$dir"' EXIT
head -c 4096 /dev/urandom > "$dir/obj"
run() { # binary label
  rm -rf "$dir/d"
  "$1" up --no-auth --volume plain --no-jobs --data "$dir/d" --listen 127.0.0.1:18080 \
    --s3-listen 127.0.0.1:19000 --admin-listen 127.0.0.1:0 > "$dir/up.log" 2>&1 &
  sleep 4
  eval "$(grep '  export' "$dir/up.log" | sed 's/^ *//')"
  unset AWS_CA_BUNDLE
  curl -sf -X PUT -T "$dir/obj" "$MOBULA_URL/admin/stor/obj" -o /dev/null
  url=$(OBJ="$dir/obj" /usr/bin/python3 -c '
import os, boto3, botocore.config
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                  config=botocore.config.Config(signature_version="s3v4"))
s3.create_bucket(Bucket="bench"); s3.put_object(Bucket="bench", Key="obj", Body=open(os.environ["OBJ"], "rb").read())
print(s3.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": "obj"}, ExpiresIn=3600))')
  pid=$(pgrep -f "$dir/d --listen")
  for api in manta s3; do
    u=$MOBULA_URL/admin/stor/obj; [ $api = s3 ] && u=$url
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$(wrk -t1 -c32 -d6s "$u")
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    n=$(echo "$out" | awk '/requests in/{print $1}')
    echo "$2 $api $(echo "$out" | awk '/Requests\/sec/{print $2}') req/s, $(( (t1-t0)*1000000/$(getconf CLK_TCK)/n )) µs server CPU per GET"
  done
  kill "$pid"; sleep 2
}
for _ in $(seq "$rounds"); do run "$old" before; run "$new" after; done
