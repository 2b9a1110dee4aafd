// FastCDC-2020 cut point search for the web UI (src/Coordinator/wwwroot/js/push.js), the same loop as
// src/Protocol/Chunking/ContentChunker.cs. The 64-bit gear hash is one i64 here; JavaScript numbers would
// need two 32-bit halves and a carry per byte. Built by scripts/build-gear-wasm.sh into wwwroot/js/gear-wasm.js.
typedef unsigned long long u64;
typedef unsigned char u8;

static u64 gear[256];
static u8 data[(4 << 20) + (256 << 10)]; // one 4 MiB block plus the carried tail (< max)

u64 *gear_table(void) { return gear; }
u8 *data_buffer(void) { return data; }
int data_capacity(void) { return sizeof data; }

// Length of the next chunk at data[start..start+n): n is already capped at max; normal = min(avg, n).
int next_chunk(int start, int n, int min, int normal, u64 mask_small, u64 mask_large) {
  const u8 *p = data + start;
  if (n <= min) return n;
  u64 hash = 0;
  int i = min;
  for (; i < normal; i++) {
    hash = (hash << 1) + gear[p[i]];
    if ((hash & mask_small) == 0) return i + 1;
  }
  for (; i < n; i++) {
    hash = (hash << 1) + gear[p[i]];
    if ((hash & mask_large) == 0) return i + 1;
  }
  return n;
}
