#!/usr/bin/env bash
# Regenerates src/Coordinator/wwwroot/vendor/msgpack.js (committed, so building and testing need no
# Node.js): @msgpack/msgpack bundled as one ES module by esbuild.
# Usage: scripts/vendor-web.sh   (needs node and npm)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --silent @msgpack/msgpack@3.1.3 esbuild
npm rebuild esbuild >/dev/null
cat > entry.js <<'JS'
export { encode, decode } from '@msgpack/msgpack';
JS
node_modules/esbuild/bin/esbuild entry.js --bundle --format=esm --minify --outfile="$root/src/Coordinator/wwwroot/vendor/msgpack.js"
echo "updated $root/src/Coordinator/wwwroot/vendor/msgpack.js"
