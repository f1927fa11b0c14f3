/** The one argmax of the project, for a vector and for each row of a row-major matrix. */

/** Index of the largest value; the first one on ties. */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** argmax of each row of a row-major [rows, columns] matrix. */
export function argmaxRows(matrix: Float32Array, columns: number): Int32Array {
  return Int32Array.from({ length: matrix.length / columns }, (_, row) => argmax(matrix.subarray(row * columns, (row + 1) * columns)));
}
