/**
 * Every cosine similarity between the images' embeddings, in one pass: the only part of
 * the audit that grows with N^2 (N^2 / 2 dot products of `dim` floats). Rows are
 * L2-normalised once, then blocks of rows are multiplied against the rows at or after
 * them with the sweep trainer's SIMD `dense` kernel (out[r, u] = x[r] . w[u], which is
 * X X^T when w is X itself), so each pair is computed once and serves both its rows.
 * What the audit needs is kept while the block is hot and the N x N matrix never exists:
 * each row's k nearest neighbours (for the map), its k nearest of the same class (for
 * outliers), and the pairs above a cosine threshold (duplicate candidates).
 */
import { Kernels, kernelModule } from '../sweep/simd.js';

export interface NeighbourInput {
  /** n x dim, row-major; need not be normalised. */
  readonly vectors: Float32Array;
  readonly dim: number;
  /** Class index per row. */
  readonly labels: Int32Array;
  /** Rows with the same content id (byte-identical files) are never each other's neighbours or pairs. */
  readonly contents: Int32Array;
  /** Neighbours kept per row, over all rows. */
  readonly k: number;
  /** Neighbours kept per row among rows of its class. */
  readonly classK: number;
  /** Pairs with cosine >= this are returned. */
  readonly pairCosine: number;
}

export interface Neighbours {
  /** n x k indices and cosines, most similar first; -1 / -Infinity where a row has fewer. */
  readonly index: Int32Array;
  readonly cosine: Float32Array;
  readonly classIndex: Int32Array;
  readonly classCosine: Float32Array;
  readonly pairs: { i: number; j: number; cosine: number }[];
}

/** Rows per block: the block's outputs (ROWS x n floats) stay small enough to revisit while hot. */
const ROWS = 64;

export async function findNeighbours(input: NeighbourInput): Promise<Neighbours> {
  const { vectors, dim, labels, contents, k, classK, pairCosine } = input;
  const n = labels.length;
  if (dim % 8) throw new RangeError(`feature dim must be a multiple of 8, got ${dim}`);
  if (vectors.length !== n * dim) throw new RangeError(`${vectors.length} values for ${n} rows of ${dim}`);
  const inBytes = dim * 4;
  const xBytes = n * inBytes;
  const biasAt = xBytes;
  const outAt = biasAt + n * 4;
  const memory = new WebAssembly.Memory({ initial: Math.ceil((outAt + ROWS * n * 4) / 65536) });
  const kernels = new Kernels(await kernelModule(), memory);
  const x = new Float32Array(memory.buffer, 0, n * dim);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let d = 0; d < dim; d++) norm += vectors[i * dim + d] ** 2;
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let d = 0; d < dim; d++) x[i * dim + d] = vectors[i * dim + d] * scale;
  }
  const out = new Float32Array(memory.buffer, outAt, ROWS * n);

  const all = new TopK(n, k);
  const sameClass = new TopK(n, classK);
  const pairs: Neighbours['pairs'] = [];
  for (let start = 0; start < n; start += ROWS) {
    const rows = Math.min(ROWS, n - start);
    const columns = n - start; // the block's own rows and every row after it
    kernels.dense({ out: outAt, input: start * inBytes, kernel: start * inBytes, bias: biasAt, rows, inputs: dim, units: columns });
    for (let r = 0; r < rows; r++) {
      const i = start + r;
      for (let u = r + 1; u < columns; u++) {
        const j = start + u;
        if (contents[i] === contents[j]) continue;
        const cosine = out[r * columns + u];
        all.offer(i, j, cosine);
        all.offer(j, i, cosine);
        if (labels[i] === labels[j]) {
          sameClass.offer(i, j, cosine);
          sameClass.offer(j, i, cosine);
        }
        if (cosine >= pairCosine) pairs.push({ i, j, cosine });
      }
    }
  }
  return { index: all.index, cosine: all.value, classIndex: sameClass.index, classCosine: sameClass.value, pairs };
}

/** The k largest values offered per row, kept sorted (insertion: k is small). */
class TopK {
  readonly index: Int32Array;
  readonly value: Float32Array;
  constructor(rows: number, private readonly k: number) {
    this.index = new Int32Array(rows * k).fill(-1);
    this.value = new Float32Array(rows * k).fill(-Infinity);
  }
  offer(row: number, item: number, value: number): void {
    const base = row * this.k;
    let at = this.k - 1;
    if (this.k === 0 || !(value > this.value[base + at])) return;
    while (at > 0 && value > this.value[base + at - 1]) {
      this.value[base + at] = this.value[base + at - 1];
      this.index[base + at] = this.index[base + at - 1];
      at--;
    }
    this.value[base + at] = value;
    this.index[base + at] = item;
  }
}
