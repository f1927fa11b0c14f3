/**
 * Stand-in feature vectors for queue tests: every float a function of the image's content
 * hash (SHA-256 in counter mode), so any process computes the same vector for an image
 * and a test can check every stored vector without running a backbone.
 */
import { createHash } from 'node:crypto';

export function fakeVector(sha256: string, dim = 1280): Float32Array {
  const vector = new Float32Array(dim);
  for (let block = 0; block * 8 < dim; block++) {
    const digest = createHash('sha256').update(`${sha256}:${block}`).digest();
    for (let i = 0; i < 8 && block * 8 + i < dim; i++) vector[block * 8 + i] = digest.readUInt32LE(i * 4) / 2 ** 32 - 0.5;
  }
  return vector;
}

/** A fake image listing: `count` paths over a few classes, content hash derived from the path. */
export function fakeItems(count: number): { path: string; sha256: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const path = `class${i % 4}/img${String(i).padStart(5, '0')}.jpg`;
    return { path, sha256: createHash('sha256').update(path).digest('hex') };
  });
}
