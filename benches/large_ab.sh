#!/bin/bash
# A/B of two `mobula` builds on 256 MiB objects, one stream at a time (curl): PUT (2 copies)
# and GET, MB/s and the server's CPU per request from /proc, the builds alternated.
#   benches/large_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [REQUESTS]
set -eu
old=$1 new=$2 rounds=${3:-2} n=${4:-10}
dir=$(mktemp -d /var/tmp/mobula-large-ab.XXXX)
trap 'pkill -f "$dir/d --listen" || true; rm -rf "$dir"' EXIT
head -c 268435456 /dev/urandom > "$dir/big"
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
report() { # label op t0 s0
  local t1 s1; t1=$(cpu); s1=$(date +%s.%N)
  echo "$1 $2: $(echo "$n * 268.435456 / ($s1 - $4)" | bc) MB/s, $(( (t1 - $3) * 1000 / n / hz )) ms server CPU each"
}
run() { # binary label
  rm -rf "$dir/d"
  "$1" up --no-auth --volume plain --no-jobs --no-s3 --data "$dir/d" --listen 127.0.0.1:18080 \
    --admin-listen 127.0.0.1:0 > "$dir/up.log" 2>&1 &
  sleep 4
  pid=$(pgrep -f "$dir/d --listen")
  u=http://127.0.0.1:18080/admin/stor
  t0=$(cpu); s0=$(date +%s.%N)
  for i in $(seq "$n"); do curl -sf -X PUT -T "$dir/big" "$u/big$i" -o /dev/null; done
  report "$2" PUT "$t0" "$s0"
  curl -sf "$u/big1" -o /dev/null
  t0=$(cpu); s0=$(date +%s.%N)
  for i in $(seq "$n"); do curl -sf "$u/big$i" -o /dev/null; done
  report "$2" GET "$t0" "$s0"
  kill "$pid"; sleep 2
}
for _ in $(seq "$rounds"); do run "$old" before; run "$new" after; done
