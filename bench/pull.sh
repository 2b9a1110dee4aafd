#!/usr/bin/env bash
# Agent pull benchmark over loopback, side by side in one run on this machine:
#   cold pull of a random image by the agent   vs  curl -o of the same bytes from the same Coordinator
#                                               vs  casync extract from a casync store of the same image (HTTP)
#   delta pull of an ISO v2 with v1 cached      vs  casync extract --seed=v1 (bytes fetched and wall time)
#   resume after kill -9 at ~50 %: time from process start to fetching again, and the journal replay
#   the agent's idle RSS
# Usage: bench/pull.sh [SIZE_MIB] [DELTA_MIB]   (default 2048 512)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-2048}; delta_mib=${2:-512}
work=${BENCH_DIR:-$root/.bench-pull}
rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
for tool in casync xorriso curl python3; do command -v $tool >/dev/null || { echo "installing $tool"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; }; done

dotnet build "$root/MsdFleet.sln" -c Release -v q --nologo -clp:NoSummary >/dev/null
coord="$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll"
agent_dll="$root/src/EdgeAgent/bin/Release/net10.0/msdfleet-agent.dll"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

port=$(free_port); mport=$(free_port); token=msdf_bench-pull-token-0123456789; url="http://127.0.0.1:$port"
Urls=$url Storage__Path="$work/store" Mqtt__EmbeddedPort=$mport Mqtt__EmbeddedStatePath="$work/broker" \
  Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning dotnet "$coord" > "$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 150); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
api() { curl -fsS -H "Authorization: Bearer $token" "$@"; }

agent_pid=""
start_agent() { # $1 id, $2 max bytes/s
  local id=$1 secret
  [ -d "$work/$id" ] || { "$root/scripts/fake-configfs.sh" "$work/$id" 1; secret=$(api -X POST "$url/api/v1/agents/$id/credentials" | json 'd["secret"]'); echo "$secret" > "$work/$id.secret"; }
  Agent__Id=$id Agent__Secret="$(cat "$work/$id.secret")" Agent__CoordinatorUrl=$url Agent__StorageRoot="$work/$id/storage" \
    Agent__MaxBytesPerSecond=${2:-0} Mqtt__Broker="mqtt://127.0.0.1:$mport" Gadget__ConfigfsRoot="$work/$id/configfs" \
    Gadget__UdcClassRoot="$work/$id/udc" dotnet "$agent_dll" >> "$work/$id.log" 2>&1 &
  agent_pid=$!; pids+=($agent_pid)
}
wait_attached() { # $1 id, $2 digest
  for _ in $(seq 1 12000); do
    [ "$(api "$url/api/v1/agents/$1" | json '(d.get("drives") or [{}])[0].get("image")')" = "$2" ] && return 0; sleep 0.05
  done; echo "timed out waiting for $1" >&2; return 1
}
mount() { api -X PUT -H 'Content-Type: application/json' -d "{\"image\":\"$2\",\"mode\":\"flash\"}" "$url/api/v1/agents/$1/drives/0" >/dev/null; }

echo "preparing a ${size_mib} MiB image and a ${delta_mib} MiB ISO pair …"
bytes=$((size_mib * 1024 * 1024))
head -c "$bytes" /dev/urandom > "$work/image.img"
digest=$(api -T "$work/image.img" "$url/api/v1/images/image.img" | json 'd["digest"]')

# --- cold pull: agent vs curl -o vs casync -------------------------------------------------------
start_agent cold
for _ in $(seq 1 200); do [ "$(api "$url/api/v1/agents/cold" | json 'd["online"]')" = True ] && break; sleep 0.05; done
t0=$(now); mount cold image.img; wait_attached cold "$digest"; t1=$(now); agent_s=$(secs "$t0" "$t1")
t0=$(now); api -o "$work/curl.img" "$url/api/v1/images/image.img"; sync -f "$work/curl.img"; t1=$(now); curl_s=$(secs "$t0" "$t1"); rm -f "$work/curl.img"
mkdir -p "$work/web"
casync make --store="$work/web/castr" "$work/web/image.caibx" "$work/image.img" >/dev/null 2>&1
hport=$(free_port)
(cd "$work/web" && exec python3 -m http.server "$hport" --bind 127.0.0.1) > "$work/http.log" 2>&1 &
pids+=($!); sleep 1
t0=$(now); casync extract --store="http://127.0.0.1:$hport/castr" "http://127.0.0.1:$hport/image.caibx" "$work/casync.img" >/dev/null 2>&1; sync -f "$work/casync.img"; t1=$(now)
casync_s=$(secs "$t0" "$t1"); rm -f "$work/casync.img"
sleep 3
idle_rss=$(awk '/^VmRSS/ { r=$2 } /^RssAnon/ { a=$2 } /^RssFile/ { f=$2 } END { printf "%d MB (anonymous %d MB, file-backed runtime images %d MB)", r/1024, a/1024, f/1024 }' /proc/$agent_pid/status)

# --- delta: ISO v2 with v1 cached ------------------------------------------------------------------
tree="$work/tree"; mkdir -p "$tree"; total=0; i=0
while [ $total -lt $((delta_mib * 1024 * 1024)) ]; do
  sz=$(( (RANDOM * 32768 + RANDOM) % (8 * 1024 * 1024 - 262144) + 262144 )); head -c $sz /dev/urandom > "$tree/f$i.bin"; total=$((total + sz)); i=$((i + 1))
done
xorriso -as mkisofs -quiet -R -V V1 -o "$work/v1.iso" "$tree" 2>/dev/null
changed=0
for f in $(ls "$tree" | shuf --random-source=<(yes)); do
  sz=$(stat -c %s "$tree/$f"); [ $((changed + sz)) -gt $((total / 10)) ] && continue
  head -c "$sz" /dev/urandom > "$tree/$f"; changed=$((changed + sz))
done
xorriso -as mkisofs -quiet -R -V V1 -o "$work/v2.iso" "$tree" 2>/dev/null
d1=$(api -T "$work/v1.iso" "$url/api/v1/images/v1.iso" | json 'd["digest"]')
d2=$(api -T "$work/v2.iso" "$url/api/v1/images/v2.iso" | json 'd["digest"]')
v2_size=$(stat -c %s "$work/v2.iso")
start_agent delta
mount delta v1.iso; wait_attached delta "$d1"
t0=$(now); mount delta v2.iso; wait_attached delta "$d2"; t1=$(now); agent_delta_s=$(secs "$t0" "$t1")
seeded=$(grep -o "Delta for $d2: [0-9]* bytes copied from cached images, [0-9]* bytes" "$work/delta.log" | awk '{ print $4 + $10 }')
agent_delta_bytes=$((v2_size - ${seeded:-0}))
casync make --store="$work/web/castr" "$work/web/v2.caibx" "$work/v2.iso" >/dev/null 2>&1
: > "$work/http.log"
t0=$(now); casync extract --store="http://127.0.0.1:$hport/castr" --seed="$work/v1.iso" "http://127.0.0.1:$hport/v2.caibx" "$work/casync-v2.iso" >/dev/null 2>&1; sync -f "$work/casync-v2.iso"; t1=$(now)
casync_delta_s=$(secs "$t0" "$t1")
casync_delta_bytes=$(grep -aoE '"GET /castr/[^ ]+' "$work/http.log" | sed 's|"GET /||' | while read -r p; do stat -c %s "$work/web/$p"; done | awk '{ s += $1 } END { print s + 0 }')
cmp -s "$work/casync-v2.iso" "$work/v2.iso" || echo "warning: casync's v2 differs from the original"

# --- resume after kill -9 at ~50 % ---------------------------------------------------------------
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
start_agent resume $((bytes / 4))
for _ in $(seq 1 200); do [ "$(api "$url/api/v1/agents/resume" | json 'd["online"]')" = True ] && break; sleep 0.05; done
mount resume image.img
for _ in $(seq 1 2000); do
  done_bytes=$(api "$url/api/v1/agents/resume" | json 'sum(t["bytesDone"] for t in (d.get("transfers") or []))')
  [ "$done_bytes" -ge $((bytes / 2)) ] && break; sleep 0.05
done
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
: > "$work/resume.log"
t0=$(now); start_agent resume 0
for _ in $(seq 1 400); do grep -q "already verified" "$work/resume.log" && break; sleep 0.02; done
t1=$(now); resume_s=$(secs "$t0" "$t1")
replay=$(grep -oE "Resume: [0-9]+ chunks .* \(([0-9]+) ms\)" "$work/resume.log" | grep -oE "[0-9]+ ms" | head -1)
wait_attached resume "$digest"
cmp -s "$(cat "$work/resume/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/file")" "$work/image.img" || echo "warning: resumed image differs"

echo
echo "cold pull of ${size_mib} MiB over loopback (durable on disk):"
printf '  agent              %6s MB/s  (%6s s)\n' "$(mbps "$bytes" "$agent_s")" "$agent_s"
printf '  curl -o            %6s MB/s  (%6s s)   agent/curl %.2fx (goal >= 1.0)\n' "$(mbps "$bytes" "$curl_s")" "$curl_s" "$(awk -v a="$curl_s" -v b="$agent_s" 'BEGIN { print a / b }')"
printf '  casync extract     %6s MB/s  (%6s s)\n' "$(mbps "$bytes" "$casync_s")" "$casync_s"
echo "delta pull of a ${v2_size}-byte ISO v2 with v1 cached (~10 % of its files changed):"
printf '  agent              %10d bytes fetched  (%6s s)\n' "$agent_delta_bytes" "$agent_delta_s"
printf '  casync --seed      %10d bytes fetched  (%6s s)\n' "$casync_delta_bytes" "$casync_delta_s"
echo "resume after kill -9 at ~50 %: ${resume_s} s from process start to fetching again (journal replay + re-check of unjournaled chunks: ${replay:-n/a})"
echo "agent idle RSS after the cold pull: ${idle_rss} (goal < 40 MB)"
