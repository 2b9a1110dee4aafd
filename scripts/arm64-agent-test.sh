#!/usr/bin/env bash
# The agent exactly as published for 64-bit Pis (linux-arm64, NativeAOT) runs on an arm64 CPU:
# started under qemu-aarch64 (user mode, Debian's qemu-user-static) with Debian's arm64 cross libc as
# its root, its local tool `drive status` / `drive attach` / `drive eject` must drive a configfs-like
# tree. Prints "CHECK <name> ok|FAIL" lines and the start time under emulation; exits non-zero unless
# every check passed. Usage: scripts/arm64-agent-test.sh [PUBLISH_DIR]   (installs what it needs with apt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pub=${1:-$root/artifacts/agent/linux-arm64}
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
for p in libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Without a PUBLISH_DIR, publish the current sources (a left-over build would test old code).
[ -n "${1:-}" ] || "$root/scripts/publish-native-agent.sh" linux-arm64 "$pub"
file "$pub/msdfleet-agent" | grep -q "ARM aarch64" || { echo "CHECK arm64-binary FAIL ($(file -b "$pub/msdfleet-agent"))"; exit 1; }
echo "CHECK arm64-binary ok"

tree=$(mktemp -d); trap 'rm -rf "$tree"' EXIT
"$root/scripts/fake-configfs.sh" "$tree" 1
head -c 1048576 /dev/urandom > "$tree/disk.img"
run() {
  QEMU_LD_PREFIX=/usr/aarch64-linux-gnu DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 MSDFLEET_AGENT_CONFIG=/nonexistent \
    qemu-aarch64-static -L /usr/aarch64-linux-gnu "$pub/msdfleet-agent" drive "$@" --configfs "$tree/configfs" --udc-root "$tree/udc"
}
check() { if [ "$2" = "$3" ]; then echo "CHECK $1 ok"; else echo "CHECK $1 FAIL (got '$2', want '$3')"; failed=1; fi; }
failed=0
start=$(date +%s.%N)
status=$(run status 2>&1 || true)
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
echo "$status"
check status-answers "$(grep -o '^lun=0 function=mass_storage.usb0 function-lun=0 file= ' <<<"$status")" "lun=0 function=mass_storage.usb0 function-lun=0 file= "
check host-state "$(grep -o 'host=configured' <<<"$status")" "host=configured"
run attach "$tree/disk.img" --ro >/dev/null 2>&1 || true
check attach-writes-file "$(cat "$tree/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/file")" "$tree/disk.img"
check attach-read-only "$(cat "$tree/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/ro")" "1"
run eject >/dev/null 2>&1 || true
check eject-empties-file "$(cat "$tree/configfs/usb_gadget/kvmd/functions/mass_storage.usb0/lun.0/file")" ""
echo "arm64 agent under qemu-aarch64: drive status answered in $elapsed s (start-up under emulation, ahead-of-time compiled)"
[ $failed -eq 0 ] && echo "arm64 agent test: all checks passed" || exit 1
