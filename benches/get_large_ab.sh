#!/bin/bash
# A/B of two `mobula` builds on 256 MiB GETs, one stream at a time (curl): MB/s and the
# server's CPU per GET from /proc, the builds alternated.
#   benches/get_large_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [GETS]
set -eu
old=$1 new=$2 rounds=${3:-2} gets=${4:-20}
dir=$(mktemp -d /var/tmp/mobula-get-large-ab.XXXX)
trap 'pkill -f "$dir/d --listen" || true; rm -rf "$dir"' EXIT
head -c 268435456 /dev/urandom > "$dir/big"
hz=$(getconf CLK_TCK)
run() { # binary label
  rm -rf "$dir/d"
  "$1" up --no-auth --volume plain --no-jobs --no-s3 --data "$dir/d" --listen 127.0.0.1:18080 \
    --admin-listen 127.0.0.1:0 > "$dir/up.log" 2>&1 &
  sleep 4
  pid=$(pgrep -f "$dir/d --listen")
  u=http://127.0.0.1:18080/admin/stor/big
  curl -sf -X PUT -T "$dir/big" "$u" -o /dev/null
  curl -sf "$u" -o /dev/null
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat"); s0=$(date +%s.%N)
  for _ in $(seq "$gets"); do curl -sf "$u" -o /dev/null; done
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat"); s1=$(date +%s.%N)
  echo "$2: $(echo "$gets * 268.435456 / ($s1 - $s0)" | bc) MB/s, $(( (t1 - t0) * 1000 / gets / hz )) ms server CPU per GET"
  kill "$pid"; sleep 2
}
for _ in $(seq "$rounds"); do run "$old" before; run "$new" after; done
