/**
 * Seeded randomness for the sweep trainer: AES-128-CTR keystreams from node:crypto.
 *
 * Why AES: input dropout needs one random draw per input element per step (~4 billion for
 * the default sweep); tfjs' seeded generator runs in JavaScript at a few hundred million
 * draws per second, while AES-CTR with AES-NI produces ~4 GB/s of high-quality bits,
 * fully determined by the key. Every (run key, seed, purpose) has its own key, so a run's
 * numbers never depend on which other runs share its batch or in what order they go.
 * Bytes are read little-endian.
 */
import { createCipheriv, createHash, type Cipher } from 'node:crypto';
import type { RunSpec } from './types.js';

export type Purpose = 'init' | 'shuffle' | 'dropout';

/** The largest request served from the shared zero buffer at once; longer ones are chunked. */
const CHUNK_BYTES = 1 << 16;
const ZEROS = Buffer.alloc(CHUNK_BYTES);

export class RandomStream {
  private readonly cipher: Cipher;

  constructor(runKey: string, seed: number, purpose: Purpose) {
    const key = createHash('sha256').update(JSON.stringify([runKey, seed, purpose])).digest().subarray(0, 16);
    this.cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  }

  /** The next `length` bytes of the keystream, written into `target` at `offset`. */
  fill(target: Uint8Array, offset: number, length: number): void {
    for (let done = 0; done < length; done += CHUNK_BYTES) {
      const size = Math.min(CHUNK_BYTES, length - done);
      target.set(this.cipher.update(ZEROS.subarray(0, size)), offset + done);
    }
  }

  uint32s(count: number): Uint32Array {
    const out = new Uint32Array(count);
    this.fill(new Uint8Array(out.buffer), 0, count * 4);
    return out;
  }

  /**
   * An unbiased uniform permutation of 0..n-1: Fisher-Yates with one pre-drawn uint32 per
   * swap (drawing one at a time would cost a cipher call each); a draw that would bias the
   * bounded result (probability < n / 2^32) is replaced by a fresh one.
   */
  permutation(n: number): Int32Array {
    const order = Int32Array.from({ length: n }, (_, i) => i);
    const draws = this.uint32s(n);
    for (let i = n - 1; i > 0; i--) {
      const bound = i + 1;
      const limit = 2 ** 32 - (2 ** 32 % bound);
      let draw = draws[i];
      while (draw >= limit) draw = this.uint32s(1)[0];
      const j = draw % bound;
      [order[i], order[j]] = [order[j], order[i]];
    }
    return order;
  }
}

/** The three independent streams of one run. */
export function runStreams(run: Pick<RunSpec, 'key' | 'seed'>): Record<Purpose, RandomStream> {
  return {
    init: new RandomStream(run.key, run.seed, 'init'),
    shuffle: new RandomStream(run.key, run.seed, 'shuffle'),
    dropout: new RandomStream(run.key, run.seed, 'dropout'),
  };
}

/** Keras' glorot_uniform for a [fanIn, fanOut] kernel: U(-limit, limit), limit = sqrt(6 / (fanIn + fanOut)). */
export function glorotUniform(stream: RandomStream, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const draws = stream.uint32s(fanIn * fanOut);
  return Float32Array.from(draws, (u) => (u / 2 ** 32 * 2 - 1) * limit);
}

/**
 * Dropout with rate p keeps an element iff its uniform uint16 >= threshold. p is rounded
 * to a multiple of 2^-16 (|error| <= 7.6e-6) and the inverted scaling uses the rounded rate,
 * so E[mask * scale] is exactly 1.
 */
export function dropoutThreshold(rate: number): { threshold: number; scale: number } {
  const threshold = Math.round(rate * 65536);
  if (!(rate >= 0 && threshold < 65536)) throw new RangeError(`dropout rate must be in [0, 1), got ${rate}`);
  return { threshold, scale: 1 / (1 - threshold / 65536) };
}
