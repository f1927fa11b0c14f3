/**
 * The one class-weight formula, used by the SIMD trainer and by its tf.layers reference,
 * so that both weigh the loss the same way.
 */

/** How many of `labels` fall in each class 0..classes-1. */
export function classCounts(labels: Int32Array, classes: number): Int32Array {
  const counts = new Int32Array(classes);
  for (const label of labels) counts[label]++;
  return counts;
}

/** sklearn's 'balanced': n / (classes * count[c]); absent classes get weight 0 (they never occur). */
export function balancedWeights(counts: Int32Array): Float64Array {
  const total = counts.reduce((a, b) => a + b, 0);
  return Float64Array.from(counts, (count) => (count ? total / (counts.length * count) : 0));
}
