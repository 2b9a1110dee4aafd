#!/usr/bin/env bash
# Ingest benchmark, side by side in one run on this machine:
#   filesystem store: Coordinator upload vs `cp` + `sync` of the same file on the same disk
#   S3 store (a real Swift on loopback): Coordinator upload vs `curl -T` of the same file to the same Swift
# with the Coordinator's peak RSS and CPU seconds for each. Usage: bench/ingest.sh [SIZE_MIB] [fs|s3|both]   (default 2048 both)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib/bench.sh"
size_mib=${1:-2048}; which=${2:-both}
case "$which" in fs|s3|both) ;; *) echo "error: the second argument is fs, s3 or both, not '$which'" >&2; exit 2 ;; esac
[[ "$size_mib" =~ ^[1-9][0-9]*$ ]] || { echo "error: SIZE_MIB must be a positive whole number of MiB, not '$size_mib'" >&2; exit 2; }
work=${BENCH_DIR:-$root/.bench}
rm -rf "$work"; mkdir -p "$work"
coord_pid=""
cleanup() {
  [ -n "$coord_pid" ] && kill "$coord_pid" 2>/dev/null || true
  "$root/scripts/swift.sh" stop "$work/swift" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

dotnet build "$root/src/Coordinator" -c Release -v q --nologo -clp:NoSummary >/dev/null
echo "writing a ${size_mib} MiB random image to $work …"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/image.img"
sync
bytes=$((size_mib * 1024 * 1024))
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
per_gib() { awk -v b="$bytes" -v c="$1" 'BEGIN { printf "%.2f", c / (b / 1073741824) }'; }

# Starts a Coordinator with the given storage settings, uploads the image, prints "seconds rss_mb cpu_seconds".
coordinator_upload() {
  local port mport token=msdf_bench-token-0123456789 start end t0 t1 log
  port=$(free_port); mport=$(free_port); log="$work/coordinator-$port.log"
  env Urls="http://127.0.0.1:$port" Mqtt__EmbeddedPort="$mport" Mqtt__EmbeddedStatePath="$work/broker-$port" State__ConnectionString="Data Source=$work/state-$port.db" \
    Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning "$@" \
    dotnet "$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll" > "$log" 2>&1 &
  coord_pid=$!
  wait_http "http://127.0.0.1:$port/healthz" "the Coordinator" "$log" "$coord_pid"
  t0=$(cpu_ticks "$coord_pid"); start=$(now)
  if ! curl -fsS -H "Authorization: Bearer $token" -T "$work/image.img" "http://127.0.0.1:$port/api/v1/images/bench.img" > "$work/upload.json" 2> "$work/curl.err"; then
    echo "error: the upload failed: $(cat "$work/curl.err"); the Coordinator's log ($log) ends with:" >&2; tail -n 20 "$log" >&2; exit 1
  fi
  end=$(now); t1=$(cpu_ticks "$coord_pid")
  echo "$(secs "$start" "$end") $(peak_rss_mb "$coord_pid") $(cpu_seconds "$t0" "$t1")"
  kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true; coord_pid=""
}
report() { # label seconds [rss cpu]
  if [ $# -gt 2 ]; then
    printf '  %-12s %6s MB/s  (%5.1f s)  peak RSS %d MB (limit 200 MB), %s CPU s/GiB\n' "$1" "$(mbps "$2")" "$2" "$3" "$(per_gib "$4")"
  else
    printf '  %-12s %6s MB/s  (%5.1f s)\n' "$1" "$(mbps "$2")" "$2"
  fi
}

if [ "$which" = fs ] || [ "$which" = both ]; then
  start=$(now); cp "$work/image.img" "$work/copy.img"; sync -f "$work/copy.img"; end=$(now)
  cp_s=$(secs "$start" "$end"); rm -f "$work/copy.img"
  read -r up_s rss cpu <<<"$(coordinator_upload Storage__Path="$work/store")"
  echo
  echo "ingest of ${size_mib} MiB into the filesystem store (durable):"
  report coordinator "$up_s" "$rss" "$cpu"
  report "cp + sync" "$cp_s"
  awk -v a="$cp_s" -v b="$up_s" 'BEGIN { printf "  ratio        %.2f x cp (goal >= 0.9)\n", a / b }'
  rm -rf "$work/store"
fi

if [ "$which" = s3 ] || [ "$which" = both ]; then
  sport=$("$root/scripts/swift.sh" port)
  "$root/scripts/swift.sh" start "$work/swift" "$sport" # returns once an authenticated container PUT works
  # Reference: curl -T of the same file into the same Swift (its native API, tempauth token).
  read -r token surl <<<"$("$root/scripts/swift.sh" auth "$sport")"
  curl -fsS -X PUT -H "X-Auth-Token: $token" "$surl/reference" >/dev/null
  start=$(now); curl -fsS -H "X-Auth-Token: $token" -T "$work/image.img" "$surl/reference/image.img" >/dev/null; end=$(now)
  curl_s=$(secs "$start" "$end")
  curl -fsS -X DELETE -H "X-Auth-Token: $token" "$surl/reference/image.img" >/dev/null
  read -r up_s rss cpu <<<"$(coordinator_upload Storage__Backend=s3 Storage__S3__Endpoint="http://127.0.0.1:$sport" \
    Storage__S3__Bucket=bench Storage__S3__AccessKey=test:tester Storage__S3__SecretKey=testing)"
  echo
  echo "ingest of ${size_mib} MiB into S3 (OpenStack Swift s3api on loopback):"
  report coordinator "$up_s" "$rss" "$cpu"
  report "curl -T" "$curl_s"
  awk -v a="$curl_s" -v b="$up_s" 'BEGIN { printf "  ratio        %.2f x curl (goal >= 0.9)\n", a / b }'
fi
echo "  last upload response: $(cat "$work/upload.json")"
