#!/usr/bin/env bash
# Builds the EdgeAgent for the Pis: self-contained for linux-arm64 (Pi 4/5 with a 64-bit OS) and
# framework-dependent for linux-arm (32-bit, as PiKVM OS uses; the linux-arm runtime packs are not
# served here, so that build has no app host and runs as `dotnet msdfleet-agent.dll`). Prints sizes.
# Usage: scripts/publish-agent.sh [OUTDIR]   (default artifacts/agent)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/artifacts/agent}
rm -rf "$out"
dotnet publish "$root/src/EdgeAgent" -c Release -r linux-arm64 --self-contained -p:UseAppHost=true \
  -o "$out/linux-arm64" -v q --nologo -clp:NoSummary
dotnet publish "$root/src/EdgeAgent" -c Release -r linux-arm --self-contained false -p:UseAppHost=false \
  -o "$out/linux-arm" -v q --nologo -clp:NoSummary
file "$out/linux-arm64/msdfleet-agent" 2>/dev/null | grep -q "aarch64" || { [ -f "$out/linux-arm64/msdfleet-agent" ] || { echo "error: no arm64 app host" >&2; exit 1; }; }
[ -f "$out/linux-arm/msdfleet-agent.dll" ] || { echo "error: no linux-arm build" >&2; exit 1; }
echo "agent publish sizes:"
echo "  linux-arm64 self-contained:   $(du -sh "$out/linux-arm64" | cut -f1)"
echo "  linux-arm framework-dependent: $(du -sh "$out/linux-arm" | cut -f1)"
