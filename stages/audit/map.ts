/**
 * A 2-D map of the embeddings with UMAP (umap-js). Its nearest-neighbour search is
 * replaced by the exact neighbours the audit already has (neighbours.ts), so only the
 * layout is optimised here; a seeded generator makes the map the same on every run.
 */
import seedrandom from 'seedrandom';
import { UMAP } from 'umap-js';
import type { AuditConfig } from './config.js';

/**
 * neighbourIndex / neighbourCosine: n x k, most similar first (-1 where missing). The
 * point itself is added as its own nearest neighbour at distance 0, as UMAP expects.
 * Returns n x 2 coordinates.
 */
export function umapLayout(
  neighbourIndex: Int32Array,
  neighbourCosine: Float32Array,
  n: number,
  config: AuditConfig['map'],
): Float32Array {
  const k = neighbourIndex.length / n;
  const nNeighbors = Math.min(config.neighbors, k + 1);
  const layout = new Float32Array(n * 2);
  if (n <= nNeighbors) return layout; // too few points to lay out: all at the origin
  const knnIndices: number[][] = [];
  const knnDistances: number[][] = [];
  for (let i = 0; i < n; i++) {
    const index = [i];
    const distance = [0];
    for (let r = 0; r < nNeighbors - 1; r++) {
      const j = neighbourIndex[i * k + r];
      // a row with fewer neighbours (tiny classes of byte-identical files) repeats itself far away
      index.push(j >= 0 ? j : i);
      distance.push(j >= 0 ? Math.max(0, 1 - neighbourCosine[i * k + r]) : 2);
    }
    knnIndices.push(index);
    knnDistances.push(distance);
  }
  const umap = new UMAP({
    nComponents: 2,
    nNeighbors,
    minDist: config.min_dist,
    nEpochs: config.epochs,
    random: seedrandom(`audit-map:${config.seed}`),
  });
  umap.setPrecomputedKNN(knnIndices, knnDistances);
  // umap-js reads only the number of points from X once the neighbours are given.
  const embedding = umap.fit(Array.from({ length: n }, (_, i) => [i]));
  embedding.forEach(([x, y], i) => {
    layout[i * 2] = x;
    layout[i * 2 + 1] = y;
  });
  return layout;
}
