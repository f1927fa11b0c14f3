/**
 * What the extract stage sees of an engine. It lives apart from engine.ts so that the
 * worker pool, which implements it, and engine.ts, which starts the pool, do not import
 * each other.
 */
import type { InputSize } from './preprocessing.js';

export interface Engine {
  /** Batches it can work on at once: the extract stage keeps this many (+1) in flight. */
  readonly parallelism: number;
  /** `count` images of uint8 RGB (H x W x 3 each) in, `count x featureDim` float32 out. Copies the pixels. */
  run(pixels: Uint8Array, count: number): Promise<Float32Array>;
  /**
   * The same without a copy: `buffer` (a whole ArrayBuffer, the first `count` images
   * filled) moves to the engine thread and comes back with the features, for the caller
   * to reuse. `size` (default: the engine's) lets one engine serve several input sizes.
   * Copying a batch between threads costs as much as decoding it on small VMs, because
   * the copy lands in fresh memory, which is slow to touch.
   */
  runInPlace(buffer: Uint8Array, count: number, size?: InputSize): Promise<{ features: Float32Array; buffer: Uint8Array }>;
  close(): Promise<void>;
}
