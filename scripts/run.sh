#!/usr/bin/env bash
# The main job: a Coordinator (embedded MQTT broker, filesystem store, HTTPS and MQTT over TLS with a
# generated CA) plus two demo agents enrolled the way real devices are, whose USB gadgets are directory
# trees laid out like configfs. Ctrl-C stops everything.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
demo=${MSDFLEET_DEMO_DIR:-$root/.demo}
http_port=${MSDFLEET_HTTP_PORT:-8080}
mqtt_port=${MSDFLEET_MQTT_PORT:-18830}
url="https://127.0.0.1:$http_port"

command -v dotnet >/dev/null || { echo "error: the .NET 10 SDK (dotnet) is required" >&2; exit 1; }
command -v curl >/dev/null || { echo "installing curl"; apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

echo "building (Release)…"
dotnet build "$root/MsdFleet.sln" -c Release -v q --nologo -clp:NoSummary >/dev/null
bin_coord="$root/src/Coordinator/bin/Release/net10.0/MsdFleet.Coordinator.dll"
bin_agent="$root/src/EdgeAgent/bin/Release/net10.0/msdfleet-agent.dll"

mkdir -p "$demo"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

token_file="$demo/admin-token"
password_file="$demo/admin-password"
if [ ! -s "$password_file" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$password_file")
fi
password=$(cat "$password_file")
ca="$demo/coordinator/tls/ca.crt"
Urls="$url" Storage__Path="$demo/coordinator/store" State__ConnectionString="Data Source=$demo/coordinator/state.db" Mqtt__EmbeddedPort="$mqtt_port" \
  Mqtt__EmbeddedStatePath="$demo/coordinator/broker" Auth__BootstrapTokenFile="$token_file" \
  Auth__BootstrapAdminPassword="$password" Tls__Mode=self-signed Tls__Directory="$demo/coordinator/tls" \
  dotnet "$bin_coord" > "$demo/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fsS --cacert "$ca" "$url/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS --cacert "$ca" "$url/healthz" >/dev/null || { echo "Coordinator did not start; see $demo/coordinator.log" >&2; exit 1; }
[ -s "$token_file" ] || { echo "no admin token in $token_file (delete $demo to start fresh)" >&2; exit 1; }
token=$(cat "$token_file")

for agent in rack1-a rack1-b; do
  "$root/scripts/fake-configfs.sh" "$demo/$agent" 2
  config="$demo/$agent/agent.json"
  if [ ! -s "$config" ]; then
    # Enrolled as a real device is: a one-time token, the CA pinned by its fingerprint, a 0600 config.
    answer=$(curl -fsS --cacert "$ca" -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
      -d "{\"agentId\":\"$agent\",\"replace\":true}" "$url/api/v1/enrollments")
    enroll_token=$(sed -E 's/.*"token":"([^"]+)".*/\1/' <<<"$answer")
    fingerprint=$(sed -E 's/.*"caSha256":"([^"]+)".*/\1/' <<<"$answer")
    MSDFLEET_ENROLL_TOKEN="$enroll_token" dotnet "$bin_agent" enroll --coordinator "$url" --ca-sha256 "$fingerprint" --config "$config" >/dev/null
  fi
  MSDFLEET_AGENT_CONFIG="$config" Agent__StorageRoot="$demo/$agent/storage" Agent__Labels__rack=rack1 \
    Gadget__ConfigfsRoot="$demo/$agent/configfs" Gadget__UdcClassRoot="$demo/$agent/udc" \
    dotnet "$bin_agent" > "$demo/$agent.log" 2>&1 &
  pids+=($!)
done

cat <<TXT

MsdFleet is running.
  Coordinator:  $url   (MQTT broker: mqtts://127.0.0.1:$mqtt_port, CA: $ca)
  Web login:    admin / $password
  Admin token:  $token
  Demo agents:  rack1-a, rack1-b   (gadgets: $demo/<agent>/configfs, logs: $demo/*.log)

Web UI:  open $url in a browser (trust $ca, or accept the warning) and log in as admin.
API reference: $url/api/docs/

Command line:
  scripts/msdctl login --server $url --user admin --ca $ca     # password above
  scripts/msdctl image push /tmp/demo.img && scripts/msdctl mount rack1-a demo.img --cdrom --wait
  scripts/msdctl agent ls; scripts/msdctl watch

curl:
  export T=$token CURL_CA_BUNDLE=$ca
  head -c 64M /dev/urandom > /tmp/demo.img
  curl -H "Authorization: Bearer \$T" -T /tmp/demo.img $url/api/v1/images/demo.img
  curl -H "Authorization: Bearer \$T" -X PUT -H 'Content-Type: application/json' \\
       -d '{"image":"demo.img","mode":"cdrom"}' $url/api/v1/agents/rack1-a/drives/0
  curl -H "Authorization: Bearer \$T" $url/api/v1/agents/rack1-a
  cat $demo/rack1-a/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/file
  curl -H "Authorization: Bearer \$T" -X PUT -H 'Content-Type: application/json' \\
       -d '{"image":"demo.img","mode":"cdrom","connected":false}' $url/api/v1/agents/rack1-a/drives/0

Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}"
