#!/usr/bin/env bash
# msdctl push benchmark, side by side in one run on this machine (filesystem store):
#   msdctl image push (client-side chunking, only missing chunks sent)  vs  curl -T of the same file
#   to the Coordinator's streaming PUT (server-side chunking), then a second push of the same file
#   (everything already stored: only the manifest travels) and a push of a copy with 5 % of its bytes changed.
# Peak RSS of the Coordinator and of msdctl, and CPU seconds, beside each figure.
# Usage: bench/push.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib/bench.sh"
size_mib=${1:-1024}
[[ "$size_mib" =~ ^[1-9][0-9]*$ ]] || { echo "error: SIZE_MIB must be a positive whole number of MiB, not '$size_mib'" >&2; exit 2; }
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
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
port=$(free_port); mport=$(free_port)
token=msdf_bench-token-0123456789
start_coordinator() {
  env Urls="http://127.0.0.1:$port" Mqtt__EmbeddedPort="$mport" Mqtt__EmbeddedStatePath="$work/broker" Storage__Path="$work/store-$1" State__ConnectionString="Data Source=$work/state-$1.db" \
    Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning HomeAssistant__Enabled=false \
    dotnet "$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll" > "$work/coordinator-$1.log" 2>&1 &
  coord_pid=$!
  wait_http "http://127.0.0.1:$port/healthz" "the Coordinator" "$work/coordinator-$1.log" "$coord_pid"
}
stop_coordinator() { kill "$coord_pid"; wait "$coord_pid" 2>/dev/null || true; coord_pid=""; }
field() { sed -E "s/.*\"$1\": ?([0-9.]+).*/\\1/" <<<"$(tr -d '\n' < "$2")"; }
# push OUT FILE NAME [ARGS]: runs msdctl under GNU time (its peak RSS), prints "seconds msdctl_rss_mb coordinator_cpu_s"
push() {
  local out=$1 file=$2 name=$3 s e t0 t1; shift 3
  t0=$(cpu_ticks "$coord_pid"); s=$(now)
  if ! MSDCTL_SERVER="http://127.0.0.1:$port" MSDCTL_TOKEN=$token MSDCTL_CONFIG="$work/msdctl.json" /usr/bin/time -f "%M %U %S" -o "$work/msdctl.rss" \
      dotnet "$root/src/Cli/bin/Release/net10.0/msdctl.dll" image push "$file" --name "$name" --json "$@" > "$out" 2> "$work/msdctl.err"; then
    echo "error: msdctl image push failed: $(cat "$work/msdctl.err")" >&2; tail -n 20 "$work/coordinator-push.log" >&2; exit 1
  fi
  e=$(now); t1=$(cpu_ticks "$coord_pid")
  read -r rss_kb user_s sys_s < <(tail -n 1 "$work/msdctl.rss")
  echo "$(secs "$s" "$e") $(( rss_kb / 1024 )) $(cpu_seconds "$t0" "$t1") $(awk -v u="$user_s" -v s="$sys_s" 'BEGIN { printf "%.2f", u + s }')"
}

start_coordinator curl
t0=$(cpu_ticks "$coord_pid"); s=$(now)
curl -fsS -H "Authorization: Bearer $token" -T "$work/image.img" "http://127.0.0.1:$port/api/v1/images/bench.img" > /dev/null
e=$(now); curl_s=$(secs "$s" "$e"); curl_cpu=$(cpu_seconds "$t0" "$(cpu_ticks "$coord_pid")"); curl_rss=$(peak_rss_mb "$coord_pid")
stop_coordinator

start_coordinator push
read -r push_s push_rss push_cpu push_mcpu <<<"$(push "$work/push1.json" "$work/image.img" bench.img)"
read -r again_s again_rss again_cpu again_mcpu <<<"$(push "$work/push2.json" "$work/image.img" bench.img --replace)"
read -r delta_s delta_rss delta_cpu delta_mcpu <<<"$(push "$work/push3.json" "$work/changed.img" changed.img)"
coord_rss=$(peak_rss_mb "$coord_pid")
stop_coordinator

echo
echo "upload of ${size_mib} MiB to a Coordinator with a filesystem store (same machine, same run):"
printf '  %-27s %6s MB/s  (%5.1f s)  Coordinator %s CPU s, peak RSS %s MB\n' "curl -T (server chunks)" "$(mbps "$curl_s")" "$curl_s" "$curl_cpu" "$curl_rss"
row() { # label json seconds msdctl_rss coordinator_cpu msdctl_cpu
  printf '  %-27s %6s MB/s  (%5.1f s)  sent %s bytes; msdctl peak RSS %s MB, %s CPU s; Coordinator %s CPU s; read done %s s, sent %s s, commit %s s\n' \
    "$1" "$(mbps "$3")" "$3" "$(field sentBytes "$2")" "$4" "$6" "$5" "$(field readDoneSeconds "$2")" "$(field sendDoneSeconds "$2")" "$(field commitSeconds "$2")"
}
row "msdctl image push (cold)" "$work/push1.json" "$push_s" "$push_rss" "$push_cpu" "$push_mcpu"
row "msdctl push again (stored)" "$work/push2.json" "$again_s" "$again_rss" "$again_cpu" "$again_mcpu"
row "msdctl push, 5 % changed" "$work/push3.json" "$delta_s" "$delta_rss" "$delta_cpu" "$delta_mcpu"
echo "  Coordinator peak RSS over the three pushes: $coord_rss MB (limit 200 MB)"
awk -v a="$curl_s" -v b="$push_s" 'BEGIN { printf "  ratio cold push / curl      %.2f x (goal >= 0.9)\n", a / b }'
awk -v s="$(field sentBytes "$work/push3.json")" -v b="$bytes" 'BEGIN { printf "  5 %% changed copy sent      %.1f %% of its bytes (goal <= 6 %%)\n", 100 * s / b }'
