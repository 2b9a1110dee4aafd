#!/usr/bin/env bash
# A throw-away OpenStack Swift with the S3 API (s3api + tempauth) on loopback, all under one folder.
#   scripts/swift.sh start DIR PORT   start (proxy on PORT, object/container/account on PORT+1..3), wait until healthy
#   scripts/swift.sh stop DIR         stop everything started from DIR
#   scripts/swift.sh port             print a port whose next four neighbours are free too
#   scripts/swift.sh auth PORT        print "TOKEN STORAGE_URL" for Swift's native API (curl references)
# S3 credentials: access key "test:tester", secret "testing", region us-east-1.
set -euo pipefail
cmd=${1:?start|stop|port|auth}

if [ "$cmd" = port ]; then
  exec python3 -c 'import socket,random
for _ in range(100):
    p=random.randint(20000,60000); ok=True
    for i in range(5):
        s=socket.socket()
        try: s.bind(("127.0.0.1",p+i))
        except OSError: ok=False
        s.close()
    if ok: print(p); break'
fi
if [ "$cmd" = auth ]; then
  headers=$(curl -fsS -i -H "X-Auth-User: test:tester" -H "X-Auth-Key: testing" "http://127.0.0.1:${2:?port}/auth/v1.0" | tr -d '\r')
  echo "$(awk -F': ' 'tolower($1)=="x-auth-token" { print $2 }' <<<"$headers") $(awk -F': ' 'tolower($1)=="x-storage-url" { print $2 }' <<<"$headers")"
  exit 0
fi
dir=$(realpath -m "${2:?folder}")

if [ "$cmd" = stop ]; then
  [ -f "$dir/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$dir/pids"
  rm -f "$dir/pids"; exit 0
fi

port=${3:?port}
for b in swift-proxy-server swift-object-server swift-container-server swift-account-server swift-ring-builder; do
  command -v "$b" >/dev/null || { echo "error: $b missing; scripts/test.sh installs Swift with apt" >&2; exit 1; }
done
user=$(id -un)
rm -rf "$dir"; mkdir -p "$dir/etc" "$dir/node/d1" "$dir/run" "$dir/log"
cat > "$dir/etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = msdfleet-test
swift_hash_path_prefix = msdfleet
[storage-policy:0]
name = gold
default = yes
CONF
common="swift_dir = $dir/etc
devices = $dir/node
mount_check = false
bind_ip = 127.0.0.1
workers = 0
user = $user
log_facility = LOG_LOCAL0
log_level = WARNING"
for kind in object container account; do
  case $kind in object) p=$((port + 1));; container) p=$((port + 2));; account) p=$((port + 3));; esac
  cat > "$dir/etc/$kind-server.conf" <<CONF
[DEFAULT]
$common
bind_port = $p
[pipeline:main]
pipeline = $kind-server
[app:$kind-server]
use = egg:swift#$kind
[$kind-replicator]
[$kind-updater]
[$kind-auditor]
CONF
  (cd "$dir/etc" && swift-ring-builder $kind.builder create 2 1 1 >/dev/null \
     && swift-ring-builder $kind.builder add r1z1-127.0.0.1:$p/d1 1 >/dev/null \
     && swift-ring-builder $kind.builder rebalance >/dev/null 2>&1 || true)
done
cat > "$dir/etc/proxy-server.conf" <<CONF
[DEFAULT]
$common
bind_port = $port
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$((port + 4))
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF
: > "$dir/pids"
memcached -l 127.0.0.1 -p $((port + 4)) -U 0 -u "$user" > "$dir/log/memcached.log" 2>&1 & echo $! >> "$dir/pids"
for kind in object container account proxy; do
  swift-$kind-server "$dir/etc/$kind-server.conf" > "$dir/log/$kind.log" 2>&1 & echo $! >> "$dir/pids"
done
# Healthy means the whole path answers, not only the proxy: an authenticated account HEAD goes through
# tempauth, memcached and the account server (right after start the proxy's /healthcheck is up while the
# account and container servers still refuse connections, and a first PUT gets 503).
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$port/healthcheck" >/dev/null 2>&1; then
    token=$(curl -fsS -i -H "X-Auth-User: test:tester" -H "X-Auth-Key: testing" "http://127.0.0.1:$port/auth/v1.0" 2>/dev/null \
      | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token" { print $2 }') || true
    if [ -n "$token" ] && curl -fsS -I -H "X-Auth-Token: $token" "http://127.0.0.1:$port/v1/AUTH_test" >/dev/null 2>&1 \
      && curl -fsS -X PUT -H "X-Auth-Token: $token" "http://127.0.0.1:$port/v1/AUTH_test/msdfleet-ready" >/dev/null 2>&1 \
      && curl -fsS -X DELETE -H "X-Auth-Token: $token" "http://127.0.0.1:$port/v1/AUTH_test/msdfleet-ready" >/dev/null 2>&1; then
      exit 0
    fi
  fi
  sleep 0.2
done
echo "error: Swift did not become ready on port $port (proxy, tempauth, account and container servers); logs in $dir/log" >&2
tail -n 20 "$dir"/log/*.log >&2
exit 1
