#!/usr/bin/env bash
# Publishes the EdgeAgent ahead-of-time compiled (NativeAOT, self-contained, one executable) for
# linux-x64 or linux-arm64, installing the native toolchain with apt when missing: clang, lld and
# zlib, plus Debian's arm64 cross libc and binutils when cross-compiling for a 64-bit Pi on x64.
# Usage: scripts/publish-native-agent.sh RID OUTDIR   (RID: linux-x64 | linux-arm64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rid=${1:?usage: publish-native-agent.sh RID OUTDIR}; out=${2:?usage: publish-native-agent.sh RID OUTDIR}
case "$rid" in linux-x64|linux-arm64) ;; *) echo "error: RID must be linux-x64 or linux-arm64, not '$rid'" >&2; exit 2 ;; esac
need=()
for p in clang lld zlib1g-dev file; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "$rid" = linux-arm64 ] && [ "$(uname -m)" != aarch64 ]; then
  for p in libc6-dev-arm64-cross libgcc-12-dev-arm64-cross binutils-aarch64-linux-gnu; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing the native toolchain: ${need[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
dotnet publish "$root/src/EdgeAgent" -c Release -r "$rid" -o "$out" -v q --nologo -clp:NoSummary >/dev/null
file "$out/msdfleet-agent" | grep -q "$([ "$rid" = linux-arm64 ] && echo 'ARM aarch64' || echo 'x86-64')" \
  || { echo "error: $out/msdfleet-agent is not a $rid executable: $(file -b "$out/msdfleet-agent")" >&2; exit 1; }
