#!/usr/bin/env bash
# Builds the EdgeAgent for the Pis: NativeAOT for linux-arm64 (Pi 4/5 with a 64-bit OS; one executable,
# no .NET runtime needed; cross-compiled on x64 — scripts/publish-native-agent.sh installs the toolchain)
# and framework-dependent for linux-arm (32-bit, as PiKVM OS uses; NativeAOT does not target 32-bit ARM
# and the linux-arm runtime packs are not served here, so that build runs as `dotnet msdfleet-agent.dll`).
# Usage: scripts/publish-agent.sh [OUTDIR]   (default artifacts/agent)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/artifacts/agent}
rm -rf "$out"
"$root/scripts/publish-native-agent.sh" linux-arm64 "$out/linux-arm64"
# (IsAotCompatible=false too: its trim analysis would ask for the linux-arm runtime pack, which is not served.)
dotnet publish "$root/src/EdgeAgent" -c Release -r linux-arm --self-contained false -p:UseAppHost=false -p:PublishAot=false -p:IsAotCompatible=false \
  -o "$out/linux-arm" -v q --nologo -clp:NoSummary
file "$out/linux-arm64/msdfleet-agent" 2>/dev/null | grep -q "aarch64" || { [ -f "$out/linux-arm64/msdfleet-agent" ] || { echo "error: no arm64 app host" >&2; exit 1; }; }
[ -f "$out/linux-arm/msdfleet-agent.dll" ] || { echo "error: no linux-arm build" >&2; exit 1; }
echo "agent publish sizes:"
echo "  linux-arm64 NativeAOT:         $(du -sh "$out/linux-arm64/msdfleet-agent" | cut -f1) (+ $(du -sh "$out/linux-arm64/msdfleet-agent.dbg" | cut -f1) of symbols in msdfleet-agent.dbg, not needed on the Pi)"
echo "  linux-arm framework-dependent: $(du -sh "$out/linux-arm" | cut -f1)"
