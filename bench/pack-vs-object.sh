#!/usr/bin/env bash
# Why chunks are stored in packs: the same 64 MiB written to and read from a real Swift (loopback)
# as 1,024 objects of 64 KiB (one per chunk, 8 requests in parallel) and as 4 objects of 16 MiB (packs).
# Usage: bench/pack-vs-object.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap '"$root/scripts/swift.sh" stop "$work/swift" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
port=$("$root/scripts/swift.sh" port)
"$root/scripts/swift.sh" start "$work/swift" "$port"
read -r token url <<<"$("$root/scripts/swift.sh" auth "$port")"
curl -fsS -X PUT -H "X-Auth-Token: $token" "$url/bench" >/dev/null
mkdir -p "$work/small" "$work/packs"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/all"
split -b 65536 -a 4 -d "$work/all" "$work/small/c"
split -b $((16 * 1024 * 1024)) -a 1 -d "$work/all" "$work/packs/p"
now() { date +%s.%N; }
run() { # $1 = folder, $2 = PUT|GET
  local start end
  start=$(now)
  if [ "$2" = PUT ]; then
    ls "$work/$1" | xargs -P 8 -I{} curl -fsS -o /dev/null -H "X-Auth-Token: $token" -T "$work/$1/{}" "$url/bench/$1-{}"
  else
    ls "$work/$1" | xargs -P 8 -I{} curl -fsS -o /dev/null -H "X-Auth-Token: $token" "$url/bench/$1-{}"
  fi
  end=$(now)
  awk -v a="$start" -v b="$end" -v n="$(ls "$work/$1" | wc -l)" 'BEGIN { printf "%7.0f MB/s  %6.2f s  %5d requests", 64 / (b - a), b - a, n }'
}
echo
echo "64 MiB into Swift (s3api proxy, loopback), 8 requests in parallel:"
echo "  PUT one object per 64 KiB chunk: $(run small PUT)"
echo "  PUT 16 MiB packs:                $(run packs PUT)"
echo "  GET one object per 64 KiB chunk: $(run small GET)"
echo "  GET 16 MiB packs:                $(run packs GET)"
