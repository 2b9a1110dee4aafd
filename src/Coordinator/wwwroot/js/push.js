// Client-side chunking and the push protocol, for the web UI. The chunker is the same FastCDC-2020
// as src/Protocol/Chunking/ContentChunker.cs (16/64/256 KiB, normalization 2, SplitMix64 gear table
// from the seed "MSDFleet"), so a browser upload deduplicates against everything already stored.
// The 64-bit gear hash is kept as two 32-bit halves; only its top bits are ever tested.
import { encode as msgpackEncode } from '../vendor/msgpack.js';
import { GEAR_WASM } from './gear-wasm.js';

export const CHUNKER = { algorithm: 'fastcdc2020-gear64', min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024, norm: 2, seed: 0x4D5344466C656574n };

const MASK64 = (1n << 64n) - 1n;
const GEAR_HI = new Uint32Array(256);
const GEAR_LO = new Uint32Array(256);
(() => {
  let state = CHUNKER.seed;
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9E3779B97F4A7C15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & MASK64;
    z = z ^ (z >> 31n);
    GEAR_HI[i] = Number(z >> 32n);
    GEAR_LO[i] = Number(z & 0xFFFFFFFFn);
  }
})();
const BITS = Math.log2(CHUNKER.avg);
const MASK_SMALL_HI = topBits(BITS + CHUNKER.norm);
const MASK_LARGE_HI = topBits(BITS - CHUNKER.norm);
function topBits(n) { return n <= 0 ? 0 : (0xFFFFFFFF << (32 - n)) >>> 0; }

/** Length of the next chunk at the start of data (a Uint8Array); final = no more data follows. */
export function nextChunkLength(data, final) {
  let n = data.length;
  if (!final && n < CHUNKER.max) throw new Error('a non-final call needs at least max bytes');
  if (n <= CHUNKER.min) return n;
  if (n > CHUNKER.max) n = CHUNKER.max;
  const normal = Math.min(CHUNKER.avg, n);
  let hi = 0, lo = 0, i = CHUNKER.min;
  for (; i < normal; i++) {
    const b = data[i];
    const lo2 = ((lo << 1) >>> 0) + GEAR_LO[b];
    hi = (((hi << 1) | (lo >>> 31)) + GEAR_HI[b] + (lo2 > 0xFFFFFFFF ? 1 : 0)) >>> 0;
    lo = lo2 >>> 0;
    if ((hi & MASK_SMALL_HI) === 0) return i + 1;
  }
  for (; i < n; i++) {
    const b = data[i];
    const lo2 = ((lo << 1) >>> 0) + GEAR_LO[b];
    hi = (((hi << 1) | (lo >>> 31)) + GEAR_HI[b] + (lo2 > 0xFFFFFFFF ? 1 : 0)) >>> 0;
    lo = lo2 >>> 0;
    if ((hi & MASK_LARGE_HI) === 0) return i + 1;
  }
  return n;
}

// The same loop as WebAssembly (src/Coordinator/Web/gear.c): one i64 instead of two halves and a carry per
// byte, ~4x faster in V8. Its memory holds the gear table and one block of the file at a time. The page's
// Content-Security-Policy allows 'wasm-unsafe-eval' for it (WebAssembly compilation only, not eval).
const MASK_SMALL = BigInt(MASK_SMALL_HI) << 32n;
const MASK_LARGE = BigInt(MASK_LARGE_HI) << 32n;
let wasmCutter = null;
function cutter() {
  if (wasmCutter !== null) return wasmCutter;
  try {
    const bytes = Uint8Array.from(atob(GEAR_WASM), (c) => c.charCodeAt(0));
    const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    const table = new Uint32Array(exports.memory.buffer, exports.gear_table(), 512);
    for (let i = 0; i < 256; i++) { table[2 * i] = GEAR_LO[i]; table[2 * i + 1] = GEAR_HI[i]; }
    const base = exports.data_buffer();
    wasmCutter = {
      capacity: exports.data_capacity(),
      load(data) { new Uint8Array(exports.memory.buffer, base, data.length).set(data); },
      next(pos, length, final) { // as nextChunkLength(data.subarray(pos, pos + length), final)
        if (!final && length < CHUNKER.max) throw new Error('a non-final call needs at least max bytes');
        const n = Math.min(length, CHUNKER.max);
        return exports.next_chunk(pos, n, CHUNKER.min, Math.min(CHUNKER.avg, n), MASK_SMALL, MASK_LARGE);
      },
    };
  } catch {
    wasmCutter = false; // no WebAssembly here: the JavaScript loop gives the same cuts
  }
  return wasmCutter;
}

/** Cuts a byte array completely; returns chunk lengths (used by the cross-check test). */
export function cutAll(bytes) {
  const lengths = [];
  let pos = 0;
  while (pos < bytes.length) {
    const rest = bytes.subarray(pos);
    const len = nextChunkLength(rest, true);
    lengths.push(len);
    pos += len;
  }
  return lengths;
}

const toHex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Reads the file once: cuts it into chunks and hashes each (WebCrypto). WebCrypto cannot hash a stream,
 * and a JavaScript SHA-256 of the whole image would halve the speed, so the manifest carries 32 zero
 * bytes there: the Coordinator computes the whole-image SHA-256 from the verified chunks at commit.
 * onProgress(bytesDone). Returns { manifest (msgpack bytes), chunks: [{id, hex, offset, length}], engine ('wasm' or 'js') }.
 */
export async function chunkFile(file, onProgress, signal) {
  const chunks = [];
  const block = 4 * 1024 * 1024; // + the carried tail (< max) fits the WebAssembly buffer
  const wasm = cutter();
  let carry = new Uint8Array(0);
  let fileOffset = 0; // of carry[0]
  let read = 0;
  while (read < file.size || carry.length > 0) {
    if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
    let data = carry;
    if (read < file.size) {
      const next = new Uint8Array(await file.slice(read, Math.min(file.size, read + block)).arrayBuffer());
      read += next.length;
      data = new Uint8Array(carry.length + next.length);
      data.set(carry, 0);
      data.set(next, carry.length);
    }
    const final = read >= file.size;
    let pos = 0;
    // WebCrypto hashes off the main thread: start every digest of this block, cut on, then collect.
    const pending = [];
    const inWasm = wasm && data.length <= wasm.capacity;
    if (inWasm) wasm.load(data);
    while (data.length - pos >= CHUNKER.max || (final && pos < data.length)) {
      // non-final pieces always hold at least max bytes here
      const len = inWasm ? wasm.next(pos, data.length - pos, true) : nextChunkLength(data.subarray(pos), true);
      const chunk = { id: null, hex: null, offset: fileOffset + pos, length: len };
      pending.push(crypto.subtle.digest('SHA-256', data.subarray(pos, pos + len)).then((d) => { chunk.id = new Uint8Array(d); chunk.hex = toHex(d); }));
      chunks.push(chunk);
      pos += len;
    }
    await Promise.all(pending);
    carry = data.slice(pos);
    fileOffset += pos;
    onProgress?.(fileOffset);
    if (final && carry.length === 0) break;
  }
  const manifest = msgpackEncode([
    1,
    file.size,
    new Uint8Array(32), // whole-image SHA-256: computed by the Coordinator
    [CHUNKER.algorithm, CHUNKER.min, CHUNKER.avg, CHUNKER.max, CHUNKER.norm, CHUNKER.seed],
    chunks.map((c) => [c.id, c.length]),
  ], { useBigInt64: true });
  return { manifest, chunks, engine: wasm ? 'wasm' : 'js' };
}

/** Frames chunks for POST /api/v1/uploads/{id}/chunks: 4-byte big-endian length, then the bytes. */
export async function frame(file, chunks) {
  const total = chunks.reduce((s, c) => s + 4 + c.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let pos = 0;
  for (const c of chunks) {
    view.setUint32(pos, c.length);
    out.set(new Uint8Array(await file.slice(c.offset, c.offset + c.length).arrayBuffer()), pos + 4);
    pos += 4 + c.length;
  }
  return out;
}
