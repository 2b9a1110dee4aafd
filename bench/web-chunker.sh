#!/usr/bin/env bash
# The web UI's client-side chunker (src/Coordinator/wwwroot/js/push.js: FastCDC cut in WebAssembly + WebCrypto
# chunk digests) timed in V8 — Chromium's JavaScript engine, here through Node.js — on a random file, beside
# `sha256sum` of the same file on the same machine in the same run (one native pass over the bytes).
# Usage: bench/web-chunker.sh [SIZE_MIB]   (default 256; needs node >= 20)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-256}
command -v node >/dev/null || { echo "error: node (>= 20) is required for this benchmark" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/js" "$work/vendor"
# The page's modules as they are, renamed .mjs so Node loads them as ES modules.
sed -e 's#../vendor/msgpack.js#../vendor/msgpack.mjs#' -e "s#'./gear-wasm.js'#'./gear-wasm.mjs'#" "$root/src/Coordinator/wwwroot/js/push.js" > "$work/js/push.mjs"
cp "$root/src/Coordinator/wwwroot/js/gear-wasm.js" "$work/js/gear-wasm.mjs"
cp "$root/src/Coordinator/wwwroot/vendor/msgpack.js" "$work/vendor/msgpack.mjs"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/image.img"
cat > "$work/bench.mjs" <<'JS'
import { chunkFile } from './js/push.mjs';
import { openAsBlob } from 'node:fs';
const file = await openAsBlob(process.argv[2]);
const t0 = performance.now();
const { chunks } = await chunkFile(file);
const s = (performance.now() - t0) / 1000;
console.log(`${(file.size / 1048576 / s).toFixed(0)} ${s.toFixed(2)} ${chunks.length}`);
JS
cat "$work/image.img" > /dev/null   # both runs read from the page cache
read -r js_mbps js_s chunks < <(node "$work/bench.mjs" "$work/image.img")
t0=$(date +%s.%N); sha256sum "$work/image.img" > /dev/null; t1=$(date +%s.%N)
sha_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "chunking ${size_mib} MiB as the web UI does (V8 $(node --version)):"
printf '  push.js chunkFile   %6s MB/s  (%5.2f s, %s chunks)\n' "$js_mbps" "$js_s" "$chunks"
printf '  sha256sum           %6s MB/s  (%5.2f s)  reference: one native pass\n' "$(awk -v m="$size_mib" -v s="$sha_s" 'BEGIN { printf "%.0f", m / s }')" "$sha_s"
