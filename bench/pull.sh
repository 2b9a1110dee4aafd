#!/usr/bin/env bash
# Agent pull benchmark over loopback, side by side in one run on this machine, with the agent as shipped
# (NativeAOT, scripts/publish-native-agent.sh) and a Coordinator warmed up by a small pull first:
#   cold pull of a random image by the agent   vs  curl -o + sync of the same bytes from the same Coordinator
#                                               vs  casync extract from a casync store of the same image (HTTP)
#   delta pull of an ISO v2 built from real Debian packages (apt-get download; v2 swaps some packages for
#   other versions) with v1 cached             vs  casync extract --seed=v1  vs  zsync -i v1
#     bytes on the wire counted by a TCP proxy in front of each server (bench/lib/wire.py), not by the tools
#   resume after kill -9 at ~50 %: time from process start to fetching again, and the journal replay
#   the agent's idle RSS after the cold pull, and start-up (drive status) of the native vs the JIT build
# Usage: bench/pull.sh [SIZE_MIB] [DELTA_MIB]   (default 2048 300; DELTA_MIB is the ISO's approximate size)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-2048}; delta_mib=${2:-300}
work=${BENCH_DIR:-$root/.bench-pull}
debs=${BENCH_DEBS:-$root/.bench-cache/debs}
rm -rf "$work"; mkdir -p "$work" "$debs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
for tool in casync xorriso curl python3 zsync; do command -v $tool >/dev/null || { echo "installing $tool"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; }; done

dotnet build "$root/MsdFleet.sln" -c Release -v q --nologo -clp:NoSummary >/dev/null
coord="$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll"
agent_dll="$root/src/EdgeAgent/bin/Release/net10.0/msdfleet-agent.dll"
agent_bin="$root/artifacts/bench-agent/linux-x64/msdfleet-agent"
t0=$(date +%s.%N); "$root/scripts/publish-native-agent.sh" linux-x64 "$(dirname "$agent_bin")"; aot_publish_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "error: nothing listens on port $1" >&2; return 1; }
# A TCP proxy that counts the bytes it passes: "$1" listen port, "$2" upstream port, "$3" stats file.
start_proxy() { python3 "$root/bench/lib/wire.py" proxy "$1" "127.0.0.1:$2" "$3" & pids+=($!); wait_port "$1"; }
down_bytes() { sleep 0.3; awk '{ print $1 }' "$1"; }

port=$(free_port); mport=$(free_port); token=msdf_bench-pull-token-0123456789; url="http://127.0.0.1:$port"
Urls=$url Storage__Path="$work/store" State__ConnectionString="Data Source=$work/state.db" Mqtt__EmbeddedPort=$mport Mqtt__EmbeddedStatePath="$work/broker" \
  Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning dotnet "$coord" > "$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$url/healthz" >/dev/null || { echo "error: the Coordinator did not come up; see $work/coordinator.log" >&2; exit 1; }
api() { curl -fsS -H "Authorization: Bearer $token" "$@"; }

agent_pid=""
start_agent() { # $1 id, $2 max bytes/s, $3 Coordinator URL the agent uses (default: direct)
  local id=$1 secret
  [ -d "$work/$id" ] || { "$root/scripts/fake-configfs.sh" "$work/$id" 1; secret=$(api -X POST "$url/api/v1/agents/$id/credentials" | json 'd["secret"]'); echo "$secret" > "$work/$id.secret"; }
  Agent__Id=$id Agent__Secret="$(cat "$work/$id.secret")" Agent__CoordinatorUrl=${3:-$url} Agent__StorageRoot="$work/$id/storage" \
    Agent__MaxBytesPerSecond=${2:-0} Mqtt__Broker="mqtt://127.0.0.1:$mport" Gadget__ConfigfsRoot="$work/$id/configfs" \
    Gadget__UdcClassRoot="$work/$id/udc" "$agent_bin" >> "$work/$id.log" 2>&1 &
  agent_pid=$!; pids+=($agent_pid)
}
wait_online() { for _ in $(seq 1 200); do [ "$(api "$url/api/v1/agents/$1" | json 'd["online"]')" = True ] && return 0; sleep 0.05; done; echo "error: agent $1 never came online; see $work/$1.log" >&2; return 1; }
wait_attached() { # $1 id, $2 digest
  for _ in $(seq 1 12000); do
    [ "$(api "$url/api/v1/agents/$1" | json '(d.get("drives") or [{}])[0].get("image")')" = "$2" ] && return 0; sleep 0.05
  done; echo "timed out waiting for $1" >&2; return 1
}
mount() { api -X PUT -H 'Content-Type: application/json' -d "{\"image\":\"$2\",\"mode\":\"flash\"}" "$url/api/v1/agents/$1/drives/0" >/dev/null; }

echo "preparing a ${size_mib} MiB image …"
bytes=$((size_mib * 1024 * 1024))
head -c "$bytes" /dev/urandom > "$work/image.img"
digest=$(api -T "$work/image.img" "$url/api/v1/images/image.img" | json 'd["digest"]')
# Warm-up: one small pull and one small download, so neither side of the comparison pays for the
# Coordinator's first requests (JIT) — a Coordinator in service is warm.
head -c $((32 * 1024 * 1024)) /dev/urandom > "$work/warm.img"
warm=$(api -T "$work/warm.img" "$url/api/v1/images/warm.img" | json 'd["digest"]')
start_agent warm; wait_online warm; mount warm warm.img; wait_attached warm "$warm"; kill "$agent_pid"
api -o /dev/null "$url/api/v1/images/warm.img"
sync

# --- cold pull: agent vs curl -o vs casync -------------------------------------------------------
# Two rounds, agent and curl alternating, each on a fresh target; the best of each is compared (this
# machine's virtual disk varies by tens of percent from one 2 GiB write to the next) and all are printed.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
agent_runs=(); curl_runs=()
for round in 1 2; do
  start_agent "cold$round"; wait_online "cold$round"
  t0=$(now); mount "cold$round" image.img; wait_attached "cold$round" "$digest"; t1=$(now); agent_runs+=("$(secs "$t0" "$t1")")
  [ $round = 2 ] || { kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; rm -rf "$work/cold$round/storage"; sync; }
  t0=$(now); api -o "$work/curl.img" "$url/api/v1/images/image.img"; sync -f "$work/curl.img"; t1=$(now); curl_runs+=("$(secs "$t0" "$t1")"); rm -f "$work/curl.img"; sync
done
agent_s=$(best "${agent_runs[@]}"); curl_s=$(best "${curl_runs[@]}")
mkdir -p "$work/web"
casync make --store="$work/web/castr" "$work/web/image.caibx" "$work/image.img" >/dev/null 2>&1
hport=$(free_port)
python3 "$root/bench/lib/wire.py" serve "$hport" "$work/web" & pids+=($!); wait_port "$hport"
t0=$(now); casync extract --store="http://127.0.0.1:$hport/castr" "http://127.0.0.1:$hport/image.caibx" "$work/casync.img" >/dev/null 2>&1; sync -f "$work/casync.img"; t1=$(now)
casync_s=$(secs "$t0" "$t1"); rm -f "$work/casync.img" "$work/web/image.caibx"; rm -rf "$work/web/castr"
sleep 3
idle_rss=$(awk '/^VmRSS/ { r=$2 } /^RssAnon/ { a=$2 } /^RssFile/ { f=$2 } END { printf "%d MB (anonymous %d MB, file-backed %d MB)", r/1024, a/1024, f/1024 }' /proc/$agent_pid/status)
"$root/scripts/fake-configfs.sh" "$work/st" 1 >/dev/null
status_time() { local t0; t0=$(now); MSDFLEET_AGENT_CONFIG=/nonexistent "$@" drive status --configfs "$work/st/configfs" --udc-root "$work/st/udc" >/dev/null 2>&1; secs "$t0" "$(now)"; }
native_start=$(status_time "$agent_bin"); jit_start=$(status_time dotnet "$agent_dll")

# --- delta: ISO pair from real Debian packages, v1 cached -------------------------------------------
# v1 and v2 hold the same packages except the "swap" ones, which v1 has at their oldest and v2 at their
# newest version in this machine's apt sources (bookworm, -updates, -security). Downloads are cached.
base=(firefox-esr thunderbird openjdk-17-jre-headless libwebkit2gtk-4.1-0 libllvm14 emacs-common gcc-12 libicu72 cpp-12
      libclang-cpp14 libstdc++-12-dev libgcc-12-dev binutils-x86-64-linux-gnu vim-runtime postgresql-15 ghostscript libavcodec59 perl-modules-5.36 git-man)
swap=(git libc6 libc6-dev locales systemd libperl5.36 libpython3.11-stdlib libxml2 libnss3 libgnutls30 libkrb5-3 libpq5)
fetch_deb() { # $1 package, $2 newest|oldest -> prints the .deb path
  local v f
  v=$(apt-cache madison "$1" | awk '{ print $3 }' | sort -V | { [ "$2" = newest ] && tail -1 || head -1; })
  [ -n "$v" ] || { echo "error: apt knows no version of $1" >&2; return 1; }
  f=$(ls "$debs/${1}_$(sed 's/^[0-9]*://; s/:/%3a/g' <<<"$v")_"*.deb 2>/dev/null | head -1)
  if [ -z "$f" ]; then
    (cd "$debs" && apt-get download -qq "$1=$v" >/dev/null 2>&1) || { echo "error: apt-get download $1=$v failed (no network to the Debian mirror?)" >&2; return 1; }
    f=$(ls -t "$debs/${1}_"*.deb | head -1)
  fi
  echo "$f"
}
echo "fetching Debian packages for a ~${delta_mib} MiB ISO pair (cached in $debs) …"
mkdir -p "$work/v1" "$work/v2"; total=0
for p in "${swap[@]}"; do
  o=$(fetch_deb "$p" oldest); n=$(fetch_deb "$p" newest)
  cp "$o" "$work/v1/"; cp "$n" "$work/v2/"; total=$((total + $(stat -c %s "$o")))
done
for p in "${base[@]}"; do
  [ $total -lt $((delta_mib * 1024 * 1024)) ] || break
  f=$(fetch_deb "$p" newest); cp "$f" "$work/v1/"; cp "$f" "$work/v2/"; total=$((total + $(stat -c %s "$f")))
done
swapped=$(comm -3 <(ls "$work/v1") <(ls "$work/v2") | wc -l); swapped=$((swapped / 2))
xorriso -as mkisofs -quiet -R -J -V DEBS -o "$work/v1.iso" "$work/v1" 2>/dev/null
xorriso -as mkisofs -quiet -R -J -V DEBS -o "$work/v2.iso" "$work/v2" 2>/dev/null
v2_size=$(stat -c %s "$work/v2.iso"); new_bytes=$(comm -13 <(ls "$work/v1") <(ls "$work/v2") | while read -r f; do stat -c %s "$work/v2/$f"; done | awk '{ s += $1 } END { print s + 0 }')
d1=$(api -T "$work/v1.iso" "$url/api/v1/images/v1.iso" | json 'd["digest"]')
d2=$(api -T "$work/v2.iso" "$url/api/v1/images/v2.iso" | json 'd["digest"]')
pport=$(free_port); start_proxy "$pport" "$port" "$work/agent-wire"
start_agent delta 0 "http://127.0.0.1:$pport/"; wait_online delta
mount delta v1.iso; wait_attached delta "$d1"
before=$(down_bytes "$work/agent-wire")
t0=$(now); mount delta v2.iso; wait_attached delta "$d2"; t1=$(now); agent_delta_s=$(secs "$t0" "$t1")
agent_delta_bytes=$(( $(down_bytes "$work/agent-wire") - before ))
cmp -s "$(cat "$work/delta/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/file")" "$work/v2.iso" || echo "warning: the agent's v2 differs from the original"
# casync and zsync: their files on a Range-capable static server, behind a counting proxy of their own.
casync make --store="$work/web/castr" "$work/web/v2.caibx" "$work/v2.iso" >/dev/null 2>&1
(cd "$work/web" && cp "$work/v2.iso" . && zsyncmake -o v2.iso.zsync -u v2.iso v2.iso >/dev/null 2>&1)
cport=$(free_port); start_proxy "$cport" "$hport" "$work/casync-wire"
t0=$(now); casync extract --store="http://127.0.0.1:$cport/castr" --seed="$work/v1.iso" "http://127.0.0.1:$cport/v2.caibx" "$work/casync-v2.iso" >/dev/null 2>&1; sync -f "$work/casync-v2.iso"; t1=$(now)
casync_delta_s=$(secs "$t0" "$t1"); casync_delta_bytes=$(down_bytes "$work/casync-wire")
cmp -s "$work/casync-v2.iso" "$work/v2.iso" || echo "warning: casync's v2 differs from the original"
zport=$(free_port); start_proxy "$zport" "$hport" "$work/zsync-wire"
t0=$(now); (cd "$work" && zsync -q -i "$work/v1.iso" -o "$work/zsync-v2.iso" "http://127.0.0.1:$zport/v2.iso.zsync" >/dev/null 2>&1); sync -f "$work/zsync-v2.iso"; t1=$(now)
zsync_delta_s=$(secs "$t0" "$t1"); zsync_delta_bytes=$(down_bytes "$work/zsync-wire")
cmp -s "$work/zsync-v2.iso" "$work/v2.iso" || echo "warning: zsync's v2 differs from the original"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true

# --- resume after kill -9 at ~50 % ---------------------------------------------------------------
start_agent resume $((bytes / 4)); wait_online resume
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
echo "cold pull of ${size_mib} MiB over loopback (durable on disk), NativeAOT agent, warm Coordinator:"
printf '  agent              %6s MB/s  (%6s s, best of %s s)\n' "$(mbps "$bytes" "$agent_s")" "$agent_s" "${agent_runs[*]}"
printf '  curl -o + sync     %6s MB/s  (%6s s, best of %s s)   agent/curl %.2fx (goal >= 1.0)\n' "$(mbps "$bytes" "$curl_s")" "$curl_s" "${curl_runs[*]}" "$(awk -v a="$curl_s" -v b="$agent_s" 'BEGIN { print a / b }')"
printf '  casync extract     %6s MB/s  (%6s s)\n' "$(mbps "$bytes" "$casync_s")" "$casync_s"
echo "delta pull of a ${v2_size}-byte ISO of Debian packages, v1 cached; ${swapped} packages swapped for another version (${new_bytes} bytes of new .debs); bytes counted by a proxy:"
printf '  agent              %10d bytes on the wire  (%6s s)\n' "$agent_delta_bytes" "$agent_delta_s"
printf '  casync --seed      %10d bytes on the wire  (%6s s)   agent/casync bytes %.3fx (goal <= 1.0)\n' "$casync_delta_bytes" "$casync_delta_s" "$(awk -v a="$agent_delta_bytes" -v b="$casync_delta_bytes" 'BEGIN { print a / b }')"
printf '  zsync -i           %10d bytes on the wire  (%6s s)   agent faster than zsync: %s\n' "$zsync_delta_bytes" "$zsync_delta_s" "$(awk -v a="$agent_delta_s" -v b="$zsync_delta_s" 'BEGIN { print (a < b) ? "yes" : "no" }')"
echo "resume after kill -9 at ~50 %: ${resume_s} s from process start to fetching again (journal replay + re-check of unjournaled chunks: ${replay:-n/a})"
echo "agent idle RSS after the cold pull: ${idle_rss} (goal < 40 MB)"
echo "start-up (drive status, wall time): NativeAOT ${native_start} s, JIT (dotnet msdfleet-agent.dll) ${jit_start} s; the NativeAOT publish took ${aot_publish_s} s"
