#!/usr/bin/env bash
# Ingest benchmark: upload an image into a Coordinator with the filesystem store and print its
# throughput and peak RSS beside `cp` (+ sync) of the same file on the same disk, in the same run.
# Usage: bench/ingest.sh [SIZE_MIB]   (default 2048)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-2048}
work=${BENCH_DIR:-$root/.bench}
rm -rf "$work"; mkdir -p "$work"
trap 'kill $coord_pid 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT

dotnet build "$root/src/Coordinator" -c Release -v q --nologo -clp:NoSummary >/dev/null
echo "writing a ${size_mib} MiB random image to $work …"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/image.img"
sync

mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
bytes=$((size_mib * 1024 * 1024))

# Reference: cp of the same file onto the same disk, made durable like the store's syncfs.
start=$(date +%s.%N); cp "$work/image.img" "$work/copy.img"; sync -f "$work/copy.img"; end=$(date +%s.%N)
cp_s=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'); rm -f "$work/copy.img"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18081)
mport=$((port + 1))
token=msdf_bench-token-0123456789
Urls="http://127.0.0.1:$port" Storage__Path="$work/store" Mqtt__EmbeddedPort=$mport Mqtt__EmbeddedStatePath="$work/broker" \
  Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning \
  dotnet "$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll" > "$work/coordinator.log" 2>&1 &
coord_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

start=$(date +%s.%N)
curl -fsS -H "Authorization: Bearer $token" -T "$work/image.img" "http://127.0.0.1:$port/api/v1/images/bench.img" > "$work/upload.json"
end=$(date +%s.%N)
up_s=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
rss_kb=$(awk '/VmHWM/ { print $2 }' /proc/$coord_pid/status)

echo
echo "ingest of ${size_mib} MiB (filesystem store, durable):"
printf '  coordinator  %6s MB/s  (%.1f s)  peak RSS %d MB  (limit 200 MB)\n' "$(mbps $bytes $up_s)" "$up_s" "$((rss_kb / 1024))"
printf '  cp + sync    %6s MB/s  (%.1f s)\n' "$(mbps $bytes $cp_s)" "$cp_s"
awk -v a="$cp_s" -v b="$up_s" 'BEGIN { printf "  ratio        %.2f x cp\n", a / b }'
echo "  upload response: $(cat "$work/upload.json")"
