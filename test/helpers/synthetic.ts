/**
 * Synthetic sweep data for tests and the sweep benchmark (which may use test helpers; tests
 * never import from bench/): seeded, TrashNet-shaped, no backbone needed.
 */
import { RandomStream } from '../../stages/sweep/random.js';
import type { TrainData } from '../../stages/sweep/trainer.js';

/** TrashNet's class proportions (cardboard, glass, metal, paper, plastic, trash) of 2527 images. */
const TRASHNET_COUNTS = [403, 501, 410, 594, 482, 137];

/**
 * Seeded gaussian clusters shaped like pooled ReLU6 features: nonnegative, mean ~0.5,
 * class centres apart by enough that a linear head reaches roughly 80-90% accuracy.
 */
export function syntheticData(sizes = { train: 1768, val: 328, test: 431 }, dim = 1280, seed = 7): TrainData {
  const classes = TRASHNET_COUNTS.length;
  // The stream keeps the name it had when this lived in bench/sweep.ts: the same numbers as before.
  const random = new RandomStream('bench:synthetic-features', seed, 'init');
  const gaussians = (n: number) => {
    const u = random.uint32s(2 * n);
    return Float64Array.from({ length: n }, (_, i) =>
      Math.sqrt(-2 * Math.log((u[2 * i] + 1) / 2 ** 32)) * Math.cos(2 * Math.PI * u[2 * i + 1] / 2 ** 32));
  };
  const centres = gaussians(classes * dim).map((g) => 0.45 + 0.04 * g);
  const total = TRASHNET_COUNTS.reduce((a, b) => a + b, 0);
  const split = (n: number) => {
    const y = new Int32Array(n);
    let row = 0;
    TRASHNET_COUNTS.forEach((count, c) => { for (const end = Math.round((row + count * n / total)); row < Math.min(end, n); row++) y[row] = c; });
    const noise = gaussians(n * dim);
    const x = Float32Array.from(noise, (g, i) => Math.max(0, centres[y[Math.floor(i / dim)] * dim + (i % dim)] + 0.45 * g));
    return { x, y };
  };
  return { dim, classes, train: split(sizes.train), val: split(sizes.val), test: split(sizes.test) };
}
