/**
 * A 64-bit DCT perceptual hash (the classic pHash, as in the `imagehash` Python package):
 * grey levels, area-averaged down to 32 x 32, 2-D DCT-II, the 8 x 8 lowest frequencies,
 * one bit per coefficient: above their median or not. Re-encoding, resizing and mild
 * brightness or colour changes move few bits; a different photo differs in about half.
 *
 * It takes RGB pixels already decoded (extract has them at the model's input size), and
 * squeezes whatever size it gets to 32 x 32, so the hash hardly depends on that size.
 */

const SIDE = 32;
const LOW = 8;

/** COS[u][x] = cos((2x + 1) u pi / 2N) for the low frequencies u < 8. */
const COS = Array.from({ length: LOW }, (_, u) =>
  Float64Array.from({ length: SIDE }, (_, x) => Math.cos(((2 * x + 1) * u * Math.PI) / (2 * SIDE))),
);

/** 16 hex digits: the 64 bits, row-major over the 8 x 8 low frequencies. */
export function perceptualHash(rgb: Uint8Array, width: number, height: number): string {
  if (!(width >= 1 && height >= 1) || rgb.length !== width * height * 3) {
    throw new RangeError(`perceptualHash: ${rgb.length} bytes is not ${width} x ${height} RGB`);
  }
  const grey = shrinkGrey(rgb, width, height);
  // rows first: R[u][y] = sum_x COS[u][x] g[y][x]; then columns: D[v][u] = sum_y COS[v][y] R[u][y]
  const rows = Array.from({ length: LOW }, (_, u) =>
    Float64Array.from({ length: SIDE }, (_, y) => {
      let sum = 0;
      for (let x = 0; x < SIDE; x++) sum += COS[u][x] * grey[y * SIDE + x];
      return sum;
    }),
  );
  const low = new Float64Array(LOW * LOW);
  for (let v = 0; v < LOW; v++) {
    for (let u = 0; u < LOW; u++) {
      let sum = 0;
      for (let y = 0; y < SIDE; y++) sum += COS[v][y] * rows[u][y];
      low[v * LOW + u] = sum;
    }
  }
  const median = medianOf(low);
  let hex = '';
  for (let nibble = 0; nibble < 16; nibble++) {
    let bits = 0;
    for (let b = 0; b < 4; b++) bits = (bits << 1) | (low[nibble * 4 + b] > median ? 1 : 0);
    hex += bits.toString(16);
  }
  return hex;
}

/** Luma (BT.601) averaged over the pixels each of the 32 x 32 cells covers (nearest pixel when the image is smaller). */
function shrinkGrey(rgb: Uint8Array, width: number, height: number): Float64Array {
  const out = new Float64Array(SIDE * SIDE);
  for (let cy = 0; cy < SIDE; cy++) {
    const y0 = Math.floor((cy * height) / SIDE);
    const y1 = Math.max(y0 + 1, Math.floor(((cy + 1) * height) / SIDE));
    for (let cx = 0; cx < SIDE; cx++) {
      const x0 = Math.floor((cx * width) / SIDE);
      const x1 = Math.max(x0 + 1, Math.floor(((cx + 1) * width) / SIDE));
      let sum = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          const p = (y * width + x) * 3;
          sum += 0.299 * rgb[p] + 0.587 * rgb[p + 1] + 0.114 * rgb[p + 2];
        }
      }
      out[cy * SIDE + cx] = sum / ((y1 - y0) * (x1 - x0));
    }
  }
  return out;
}

function medianOf(values: Float64Array): number {
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length / 2;
  return (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The hash as two 32-bit halves, for fast Hamming distances over many pairs. */
export function hashWords(hash: string): [number, number] {
  if (!/^[0-9a-f]{16}$/.test(hash)) throw new RangeError(`not a 64-bit perceptual hash: ${JSON.stringify(hash)}`);
  return [Number.parseInt(hash.slice(0, 8), 16) | 0, Number.parseInt(hash.slice(8), 16) | 0];
}

/** Bits that differ between two hashes given as words (0..64). */
export function hammingWords(aHigh: number, aLow: number, bHigh: number, bLow: number): number {
  return popcount(aHigh ^ bHigh) + popcount(aLow ^ bLow);
}

export function hammingDistance(a: string, b: string): number {
  const [aHigh, aLow] = hashWords(a);
  const [bHigh, bLow] = hashWords(b);
  return hammingWords(aHigh, aLow, bHigh, bLow);
}

function popcount(word: number): number {
  let v = word - ((word >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}
