#!/usr/bin/env bash
# Where an ingest's time goes: each stage alone over one random file (bench/IngestProfile: CPU seconds per GiB
# for read, cut, chunk ids, whole-image hash, pack copy, buffered and O_DIRECT writes, syncfs), on this machine.
# docs/ingest-profile.md records a run and what was changed because of it. Usage: bench/ingest-profile.sh [SIZE_MIB]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
[[ "$size_mib" =~ ^[1-9][0-9]*$ ]] || { echo "error: SIZE_MIB must be a positive whole number of MiB, not '$size_mib'" >&2; exit 2; }
work=${BENCH_DIR:-$root/.bench-profile}
rm -rf "$work"; mkdir -p "$work"; trap 'rm -rf "$work"' EXIT
dotnet build "$root/bench/IngestProfile" -c Release -v q --nologo -clp:NoSummary >/dev/null
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/image.img"
cat "$work/image.img" > /dev/null # in the page cache, as an upload's bytes are in memory
dotnet "$root/bench/IngestProfile/bin/Release/net10.0/MsdFleet.IngestProfile.dll" "$work/image.img" "$work/scratch"
