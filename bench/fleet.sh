#!/usr/bin/env bash
# Fleet scale benchmark, side by side in one run on this machine (issue 12, "How we will know"):
#   for each N: a real Coordinator (Release build output, SQLite + filesystem store) on a real Mosquitto
#   (loopback, with the password file and ACL the Coordinator generates), N agents enrolled through fleet tokens
#   and connected by the simulator (bench/FleetBench), each with the image cached; then
#     - the raw MQTT round trip to the same N sessions (publish to each, each answers),
#     - a rollout to all N (one wave, 100 %, no concurrency cap) until every agent reported it attached,
#     - the Coordinator's CPU and RSS idle (agents connected and reporting every 30 s) and during the rollout;
#   then the embedded broker's limit: a Coordinator with its default embedded broker, agents ramped up
#   (RAMP_STEPS) until connects fail or time out, or latency blows up.
# Usage: bench/fleet.sh [N ...]   (default 1000 10000; RAMP_STEPS=1000,2000,5000,10000,15000,18000; RAMP_STEPS=none skips it;
#        IDLE_SECONDS=20; BENCH_COORDINATOR_ENV='DOTNET_PerfMapEnabled=1 …' for profiling; BENCH_KEEP=1 keeps the logs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- 1000 10000
ramp_steps=${RAMP_STEPS:-1000,2000,5000,10000,15000,18000}
work=${BENCH_DIR:-$root/.bench-fleet}
rm -rf "$work"; mkdir -p "$work"
results="$work/results.txt"; : > "$results"
token=msdf_bench-token-0123456789
export CLK_TCK; CLK_TCK=$(getconf CLK_TCK)

# Every agent is a socket in the simulator and one in the broker: raise the descriptor limit as far as allowed.
ulimit -n "$(ulimit -Hn)"
largest=0; for n in "$@"; do [ "$n" -gt "$largest" ] && largest=$n; done
if [ "$(ulimit -n)" -lt $((largest + 500)) ]; then
  echo "fleet.sh: $largest agents need about $((largest + 500)) file descriptors per process; the hard limit here is $(ulimit -Hn) (raise it with ulimit -Hn / limits.conf)" >&2
  exit 1
fi

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

echo "building Release …"
dotnet build "$root/src/Coordinator" -c Release -v q --nologo -clp:NoSummary >/dev/null
dotnet build "$root/bench/FleetBench" -c Release -v q --nologo -clp:NoSummary >/dev/null
coordinator_dll="$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll"
fleetbench=(dotnet "$root/bench/FleetBench/bin/Release/net10.0/MsdFleet.FleetBench.dll")
mosquitto=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
[ -n "$mosquitto" ] || { echo "fleet.sh: Mosquitto is not installed (apt-get install mosquitto, or scripts/test.sh)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL WHAT PID LOG [SECONDS]: until URL answers 2xx; a dead process or the deadline ends the run with its log.
wait_http() {
  local url=$1 what=$2 pid=$3 log=$4 deadline=$((SECONDS + ${5:-60}))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "fleet.sh: $what exited before $url answered; its log ($log):" >&2; tail -n 30 "$log" >&2; exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "fleet.sh: $what did not answer $url within ${5:-60} s; its log ($log):" >&2; tail -n 30 "$log" >&2; exit 1
    fi
    sleep 0.2
  done
}

# wait_port PORT WHAT PID LOG: until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 what=$2 pid=$3 log=$4 deadline=$((SECONDS + 20))
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "fleet.sh: $what exited; its log ($log):" >&2; tail -n 30 "$log" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "fleet.sh: $what is not listening on port $port after 20 s; its log ($log):" >&2; tail -n 30 "$log" >&2; exit 1; }
    sleep 0.1
  done
}

admin_get() { curl -fsS -H "Authorization: Bearer $token" "$1"; }

# start_coordinator DIR HTTP_PORT SETTING=VALUE ...: sets coord_pid.
start_coordinator() {
  local dir=$1 port=$2; shift 2
  env Urls="http://127.0.0.1:$port" State__ConnectionString="Data Source=$dir/state.db" Storage__Path="$dir/store" Tls__Mode=off \
    Auth__BootstrapAdminToken=$token Logging__LogLevel__Default=Warning DOTNET_ENVIRONMENT=Production \
    'Logging__LogLevel__MsdFleet.Coordinator.Messaging.CoordinatorMqttService=Error' "$@" ${BENCH_COORDINATOR_ENV:-} \
    dotnet "$coordinator_dll" > "$dir/coordinator.log" 2>&1 &
  coord_pid=$!; pids+=("$coord_pid")
}

stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

for n in "$@"; do
  dir="$work/n$n"; mkdir -p "$dir"
  hport=$(free_port); mport=$(free_port)
  broker_password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  echo
  echo "== $n agents: Coordinator on Mosquitto 127.0.0.1:$mport =="
  # The Coordinator first (it waits for its broker): the ACL and password file come from it.
  start_coordinator "$dir" "$hport" Mqtt__Broker="mqtt://127.0.0.1:$mport" Mqtt__Username=coordinator Mqtt__Password="$broker_password"
  wait_http "http://127.0.0.1:$hport/healthz" "the Coordinator" "$coord_pid" "$dir/coordinator.log"
  admin_get "http://127.0.0.1:$hport/api/v1/broker/mosquitto/acl" > "$dir/acl"
  admin_get "http://127.0.0.1:$hport/api/v1/broker/mosquitto/passwords" > "$dir/passwords"
  cat > "$dir/mosquitto.conf" <<EOF
listener $mport 127.0.0.1
allow_anonymous false
password_file $dir/passwords
acl_file $dir/acl
persistence false
# Unlimited queue per client (as the integration tests run it): the Coordinator's one session takes every report.
max_queued_messages 0
user $(id -un)
log_dest file $dir/mosquitto.log
EOF
  "$mosquitto" -c "$dir/mosquitto.conf" > "$dir/mosquitto.out" 2>&1 &
  mosq_pid=$!; pids+=("$mosq_pid")
  wait_port "$mport" "Mosquitto" "$mosq_pid" "$dir/mosquitto.out"
  wait_http "http://127.0.0.1:$hport/readyz" "the Coordinator (connected to Mosquitto)" "$coord_pid" "$dir/coordinator.log"

  "${fleetbench[@]}" enroll --coordinator "http://127.0.0.1:$hport/" --admin-token $token --count "$n" --out "$dir/agents.txt"
  # The new agents' hashes into Mosquitto's password file; SIGHUP reloads it.
  admin_get "http://127.0.0.1:$hport/api/v1/broker/mosquitto/passwords" > "$dir/passwords"
  kill -HUP "$mosq_pid"
  sleep 1
  "${fleetbench[@]}" run --coordinator "http://127.0.0.1:$hport/" --admin-token $token --broker "mqtt://127.0.0.1:$mport" \
    --broker-user coordinator --broker-password "$broker_password" --agents "$dir/agents.txt" --coordinator-pid "$coord_pid" \
    --idle-seconds "${IDLE_SECONDS:-20}" --results "$results" || echo "  (the run did not finish; the table shows what it measured)"
  stop "$coord_pid" "$mosq_pid"
done

if [ "$ramp_steps" != none ]; then
  dir="$work/embedded"; mkdir -p "$dir"
  hport=$(free_port); mport=$(free_port)
  echo
  echo "== the embedded broker's limit: Coordinator with its embedded MQTT broker (default settings) on 127.0.0.1:$mport =="
  start_coordinator "$dir" "$hport" Mqtt__EmbeddedPort="$mport" Mqtt__EmbeddedStatePath="$dir/broker"
  wait_http "http://127.0.0.1:$hport/readyz" "the Coordinator" "$coord_pid" "$dir/coordinator.log"
  "${fleetbench[@]}" ramp --coordinator "http://127.0.0.1:$hport/" --admin-token $token --broker "mqtt://127.0.0.1:$mport" \
    --coordinator-pid "$coord_pid" --steps "$ramp_steps" --results "$results" || echo "  (the ramp did not finish; the table shows the steps it measured)"
  stop "$coord_pid"
fi

echo
echo "fleet benchmark ($(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo); Mosquitto $("$mosquitto" -h 2>/dev/null | awk 'NR==1 { print $3 }'))"
printf '  %6s  %9s  %15s  %7s  %8s  %16s  %16s  %s\n' agents "raw RTT" "rollout (agents)" ratio "ms/agent" "idle CPU / RSS" "rollout CPU/RSS" "rollout succeeded (Coordinator)"
awk '$1 == "fleet" {
  printf "  %6d  %7d ms  %12s ms  %6s x  %8s  %6s %% %5s MB  %6s %% %5s MB  %s%s\n", $2, $3, $4, $5, $6, $8, $9, $10, $11, ($13 == "-" ? "not seen" : $13 " ms"),
    ($12 < $2 ? "  (only " $12 " attached)" : "") }' "$results"
echo "  goal: rollout <= 1.5 x raw (1,000 < 0.5 s, 10,000 < 5 s); at 1,000 idle < 300 MB and < 5 % of a core. CPU in % of one core."
if grep -q '^ramp ' "$results"; then
  echo "  embedded broker ramp:"
  printf '    %6s  %6s  %18s  %15s  %18s  %16s\n' agents failed "connect p50/p99" "all online after" "PINGREQ p50/p99" "coordinator CPU/RSS"
  awk '$1 == "ramp" { printf "    %6d  %6d  %8s / %-6s ms  %13s s  %7s / %-7s ms  %6s %% %5s MB\n", $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$results"
fi
awk '$1 == "limit" { gsub("_", " ", $3); print "  embedded broker limit: " $2 " agents (" $3 ")" }' "$results"
