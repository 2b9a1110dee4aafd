#!/usr/bin/env bash
# Runs every test. Installs what the tests need when missing (Mosquitto, OpenStack Swift, PostgreSQL, podman with runc, catatonit and debootstrap, xorriso, qemu
# system and user mode with an arm64 libc, the NativeAOT toolchain (clang, lld, arm64 cross libc), Chromium for the browser tests, with apt); each test starts its own servers on loopback (Swift via scripts/swift.sh) and stops them. Prints a final line "N passed, M failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need+=(mosquitto)
command -v curl >/dev/null || need+=(curl)
command -v xorriso >/dev/null || need+=(xorriso)
command -v memcached >/dev/null || need+=(memcached)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
{ command -v depmod || [ -x /sbin/depmod ]; } >/dev/null || need+=(kmod)
command -v xz >/dev/null || need+=(xz-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
# The state-store contract suite runs against a real PostgreSQL server (started by the tests on a free port).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
for p in libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
# The NativeAOT agent (x64 and cross-compiled arm64): scripts/publish-native-agent.sh would install these too.
for p in clang lld zlib1g-dev file libc6-dev-arm64-cross libgcc-12-dev-arm64-cross binutils-aarch64-linux-gnu; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
# The container test builds the Coordinator's image and runs the rendered manifests with podman kube play
# (runc: crun fails on these hosts; catatonit: the pods' pause process; debootstrap: the local base image).
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v catatonit >/dev/null || [ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)
command -v debootstrap >/dev/null || need+=(debootstrap)
for p in swift swift-proxy swift-account swift-container swift-object; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "error: could not install ${need[*]} with apt" >&2; echo "0 passed, 1 failed"; exit 1; }
fi
# The Debian package starts a system broker on 1883 where systemd runs; tests use their own ports.
# The manifest tests render deploy/k8s with kubectl's kustomize v5 (preinstalled here as /usr/bin/kubectl; Debian's
# kubernetes-client 1.20 is too old for these kustomizations). Without it those tests fail and say why.
command -v kubectl >/dev/null || echo "warning: kubectl (with kustomize v5) is missing: tests/Deploy.Tests will fail" >&2

results="$root/TestResults"
rm -rf "$results"
dotnet build MsdFleet.sln -c Release -v q --nologo -clp:NoSummary || { echo "0 passed, 1 failed"; exit 1; }
dotnet test MsdFleet.sln -c Release --no-build --nologo --logger "trx" --results-directory "$results" -- RunConfiguration.TestSessionTimeout=3000000
status=$?

passed=0; failed=0
for trx in "$results"/*.trx; do
  [ -e "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(sed -E 's/.* passed="([0-9]+)".*/\1/' <<<"$counters"); f=$(sed -E 's/.* failed="([0-9]+)".*/\1/' <<<"$counters")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
# One million generated inputs through every untrusted-input parser (bench/Fuzz); counts as one test.
echo "fuzzing the parsers at the trust boundary (1,000,000 inputs)…"
if dotnet bench/Fuzz/bin/Release/net10.0/MsdFleet.Fuzz.dll 1000000; then passed=$((passed + 1)); else failed=$((failed + 1)); status=1; fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
exit "$status"
