#!/usr/bin/env bash
# msdctl push benchmark, side by side in one run on this machine (filesystem store):
#   msdctl image push (client-side chunking, only missing chunks sent)  vs  curl -T of the same file
#   to the Coordinator's streaming PUT (server-side chunking), then a second push of the same file
#   (everything already stored: only the manifest travels) and a push of a copy with 5 % of its bytes changed.
# Usage: bench/push.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
work=${BENCH_DIR:-$root/.bench-push}
rm -rf "$work"; mkdir -p "$work"
coord_pid=""
cleanup() { [ -n "$coord_pid" ] && kill "$coord_pid" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

dotnet build "$root/src/Coordinator" -c Release -v q --nologo -clp:NoSummary >/dev/null
dotnet build "$root/src/Cli" -c Release -v q --nologo -clp:NoSummary >/dev/null
echo "writing a ${size_mib} MiB random image and a copy with 5 % changed …"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/image.img"
cp "$work/image.img" "$work/changed.img"
# 5 % changed: rewrite 1 MiB at every 20th MiB.
for ((m = 10; m < size_mib; m += 20)); do
  head -c 1048576 /dev/urandom | dd of="$work/changed.img" bs=1M seek="$m" conv=notrunc status=none
done
sync
bytes=$((size_mib * 1024 * 1024))
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=msdf_bench-token-0123456789
start_coordinator() {
  env Urls="http://127.0.0.1:$port" Mqtt__EmbeddedPort="$mport" Mqtt__EmbeddedStatePath="$work/broker" Storage__Path="$work/store-$1" State__ConnectionString="Data Source=$work/state-$1.db" \
    Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning HomeAssistant__Enabled=false \
    dotnet "$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll" > "$work/coordinator.log" 2>&1 &
  coord_pid=$!
  for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_coordinator() { kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true; coord_pid=""; }
msdctl() { MSDCTL_SERVER="http://127.0.0.1:$port" MSDCTL_TOKEN=$token MSDCTL_CONFIG="$work/msdctl.json" dotnet "$root/src/Cli/bin/Release/net10.0/msdctl.dll" "$@"; }
field() { sed -E "s/.*\"$1\": ?([0-9.]+).*/\\1/" <<<"$(tr -d '\n' < "$2")"; }

start_coordinator curl
s=$(now); curl -fsS -H "Authorization: Bearer $token" -T "$work/image.img" "http://127.0.0.1:$port/api/v1/images/bench.img" > /dev/null; e=$(now)
curl_s=$(secs "$s" "$e")
stop_coordinator

start_coordinator push
s=$(now); msdctl image push "$work/image.img" --name bench.img --json > "$work/push1.json"; e=$(now); push_s=$(secs "$s" "$e")
s=$(now); msdctl image push "$work/image.img" --name bench.img --replace --json > "$work/push2.json"; e=$(now); again_s=$(secs "$s" "$e")
s=$(now); msdctl image push "$work/changed.img" --name changed.img --json > "$work/push3.json"; e=$(now); delta_s=$(secs "$s" "$e")
stop_coordinator

echo
echo "upload of ${size_mib} MiB to a Coordinator with a filesystem store (same machine, same run):"
printf '  curl -T (server chunks)     %6s MB/s  (%5.1f s)\n' "$(mbps "$curl_s")" "$curl_s"
printf '  msdctl image push (cold)    %6s MB/s  (%5.1f s)  sent %s bytes\n' "$(mbps "$push_s")" "$push_s" "$(field sentBytes "$work/push1.json")"
printf '  msdctl push again (stored)  %6s MB/s  (%5.1f s)  sent %s bytes\n' "$(mbps "$again_s")" "$again_s" "$(field sentBytes "$work/push2.json")"
printf '  msdctl push, 5 %% changed    %6s MB/s  (%5.1f s)  sent %s bytes\n' "$(mbps "$delta_s")" "$delta_s" "$(field sentBytes "$work/push3.json")"
awk -v a="$curl_s" -v b="$push_s" 'BEGIN { printf "  ratio cold push / curl      %.2f x\n", a / b }'
