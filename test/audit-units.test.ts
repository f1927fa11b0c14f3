/**
 * The audit's parts on data small enough to check by hand or by brute force: the
 * perceptual hash, the blocked neighbour search, duplicate groups and leaks, folds and
 * confident learning.
 */
import test from 'ava';
import sharp from 'sharp';
import { hammingDistance, hashWords, perceptualHash } from '../data/phash.js';
import { DEFAULT_AUDIT_CONFIG } from '../stages/audit/config.js';
import { type AuditItem, duplicateGroups, findLeaks, isNearDuplicate, pairDistances } from '../stages/audit/duplicates.js';
import { assignFolds, confidentLearning, labelIssueRows } from '../stages/audit/labels.js';
import { umapLayout } from '../stages/audit/map.js';
import { findNeighbours } from '../stages/audit/neighbours.js';
import { pixels } from './helpers/images.js';
import { rng } from './helpers/random-model.js';

const raw = async (image: ReturnType<typeof sharp>) => {
  const { data, info } = await image.removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return perceptualHash(data, info.width, info.height);
};
/** A photo-like test picture: seeded rectangles of many sizes and colours over colour waves, softened. */
function scene(seed: number): Buffer {
  const random = rng(seed);
  const data = pixels(320, 240, seed);
  for (let r = 0; r < 14; r++) {
    const [w, h] = [20 + random() * 140, 20 + random() * 110];
    const [x0, y0] = [random() * (320 - w), random() * (240 - h)];
    const colour = [random(), random(), random()].map((v) => Math.round(v * 255));
    for (let y = Math.floor(y0); y < y0 + h; y++) for (let x = Math.floor(x0); x < x0 + w; x++) data.set(colour, (y * 320 + x) * 3);
  }
  return data;
}
const fromPixels = (seed: number) => sharp(scene(seed), { raw: { width: 320, height: 240, channels: 3 } }).blur(1.5);

test('perceptual hash: copies re-encoded, resized or brightened stay close, other pictures are far', async (t) => {
  const original = await raw(fromPixels(1));
  const jpeg = await fromPixels(1).jpeg({ quality: 40 }).toBuffer();
  const reencoded = await raw(sharp(jpeg));
  const resized = await raw(fromPixels(1).resize(190, 150));
  const brighter = await raw(fromPixels(1).modulate({ brightness: 1.2 }));
  const others = await Promise.all([2, 3, 4, 5].map((seed) => raw(fromPixels(seed))));
  t.true(hammingDistance(original, reencoded) <= 4, `re-encoded: ${hammingDistance(original, reencoded)}`);
  t.true(hammingDistance(original, resized) <= 4, `resized: ${hammingDistance(original, resized)}`);
  t.true(hammingDistance(original, brighter) <= 6, `brighter: ${hammingDistance(original, brighter)}`);
  for (const other of others) t.true(hammingDistance(original, other) >= 16, `other picture: ${hammingDistance(original, other)}`);
  t.regex(original, /^[0-9a-f]{16}$/);
});

test('perceptual hash: an image smaller than 32 x 32 hashes; wrong sizes and bad hashes are refused', (t) => {
  const tiny = pixels(7, 5, 3);
  t.regex(perceptualHash(tiny, 7, 5), /^[0-9a-f]{16}$/);
  t.throws(() => perceptualHash(tiny, 8, 5), { instanceOf: RangeError });
  t.throws(() => hashWords('xyz'), { instanceOf: RangeError });
  t.is(hammingDistance('ffffffffffffffff', '0000000000000000'), 64);
  t.is(hammingDistance('8000000000000001', '0000000000000000'), 2);
});

/** Brute-force cosine over rows. */
function cosines(x: Float32Array, n: number, dim: number): number[][] {
  const norm = (i: number) => Math.sqrt(x.subarray(i * dim, (i + 1) * dim).reduce((s, v) => s + v * v, 0));
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: n }, (_, j) => {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += x[i * dim + d] * x[j * dim + d];
      return dot / (norm(i) * norm(j));
    }),
  );
}

test('neighbours: blocked products give the brute-force neighbours, class neighbours and pairs', async (t) => {
  const random = rng(7);
  const n = 150; // more than one block of rows
  const dim = 16;
  const x = Float32Array.from({ length: n * dim }, () => random() - 0.5);
  x.set(x.subarray(0, dim), 5 * dim); // row 5 copies row 0 (another file, same content id below)
  for (let d = 0; d < dim; d++) x[9 * dim + d] = x[d] + 0.01; // row 9 nearly copies row 0
  const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
  const contents = Int32Array.from({ length: n }, (_, i) => (i === 5 ? 0 : i));
  const found = await findNeighbours({ vectors: x, dim, labels, contents, k: 4, classK: 3, pairCosine: 0.6 });
  const cos = cosines(x, n, dim);
  for (const i of [0, 1, 77, 149]) {
    const others = [...Array(n).keys()].filter((j) => contents[j] !== contents[i]);
    const best = others.sort((a, b) => cos[i][b] - cos[i][a]).slice(0, 4);
    t.deepEqual([...found.index.subarray(i * 4, i * 4 + 4)], best, `row ${i}`);
    best.forEach((j, r) => t.true(Math.abs(found.cosine[i * 4 + r] - cos[i][j]) < 1e-5));
    const sameClass = others.filter((j) => labels[j] === labels[i]).slice(0, 3);
    t.deepEqual([...found.classIndex.subarray(i * 3, i * 3 + 3)], sameClass, `row ${i} same class`);
  }
  const expected = [];
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (contents[i] !== contents[j] && cos[i][j] >= 0.6) expected.push(`${i}-${j}`);
  t.deepEqual(found.pairs.map((p) => `${p.i}-${p.j}`).sort(), expected.sort());
  t.true(expected.includes('0-9'));
  t.false(found.pairs.some((p) => p.i === 0 && p.j === 5), 'byte-identical files are not a near pair');
});

const item = (path: string, label: string, split: string | null, sha256: string): AuditItem => ({ path, label, split, sha256 });

test('duplicate groups: exact copies by content, near copies need both witnesses, groups are connected components', (t) => {
  const items = [
    item('a/1.jpg', 'a', 'train', 'h1'),
    item('b/1-copy.jpg', 'b', 'test', 'h1'), // exact copy in another class and split
    item('a/2.jpg', 'a', 'train', 'h2'),
    item('a/2-small.jpg', 'a', 'val', 'h3'), // near copy of 2
    item('a/2-crop.jpg', 'a', 'train', 'h4'), // near copy of 2-small (crop: many bits, high cosine)
    item('a/look-alike.jpg', 'a', 'test', 'h5'), // close embedding, different picture
    item('a/same-hash.jpg', 'a', 'test', 'h6'), // same hash, different scene
  ];
  const phash = new Map([
    ['h1', '0000000000000000'],
    ['h2', 'ffff0000ffff0000'],
    ['h3', 'ffff0000ffff0003'], // 2 bits from h2
    ['h4', 'ffff0000fff00ff3'], // 12 bits from h3
    ['h5', '0f0f0f0f0f0f0f0f'], // 32 bits from h2
    ['h6', 'ffff0000ffff0000'],
  ]);
  const pairs = [
    { i: 2, j: 3, cosine: 0.9 },
    { i: 3, j: 4, cosine: 0.95 },
    { i: 2, j: 5, cosine: 0.97 },
  ];
  const distances = pairDistances(pairs, items, phash);
  t.deepEqual([...distances], [2, 12, 32]);
  const rules = DEFAULT_AUDIT_CONFIG.duplicates;
  t.true(isNearDuplicate(0.9, 2, rules));
  t.false(isNearDuplicate(0.8, 0, rules), 'the hash alone does not decide');
  t.false(isNearDuplicate(0.99, 32, rules), 'the embedding alone does not decide');
  const groups = duplicateGroups(items, pairs, distances, rules);
  t.deepEqual(groups, [
    { paths: ['a/2-crop.jpg', 'a/2-small.jpg', 'a/2.jpg'], kind: 'near', split: ['train', 'val', 'train'], labels: ['a', 'a', 'a'] },
    { paths: ['a/1.jpg', 'b/1-copy.jpg'], kind: 'exact', split: ['train', 'test'], labels: ['a', 'b'] },
  ]);
  t.deepEqual(findLeaks(groups), [
    { group: 0, splits: ['train', 'val'], labels: ['a'] },
    { group: 1, splits: ['test', 'train'], labels: ['a', 'b'] },
  ]);
});

test('folds: duplicate groups share a fold, classes are spread evenly, the same seed gives the same folds', (t) => {
  const labels = Int32Array.from({ length: 100 }, (_, i) => (i < 60 ? 0 : 1));
  const groups = Int32Array.from({ length: 100 }, (_, i) => (i < 6 ? 0 : i)); // rows 0..5 are one group
  const folds = assignFolds(labels, groups, 5, 1);
  t.is(new Set(folds.subarray(0, 6)).size, 1);
  for (const label of [0, 1]) {
    const counts = [0, 1, 2, 3, 4].map((f) => folds.filter((fold, i) => fold === f && labels[i] === label).length);
    t.true(Math.max(...counts) - Math.min(...counts) <= 6, `class ${label}: ${counts}`);
  }
  t.deepEqual(assignFolds(labels, groups, 5, 1), folds);
  t.notDeepEqual(assignFolds(labels, groups, 5, 2), folds);
});

test('confident learning: per-class thresholds, the confident joint and issues ranked by self-confidence', (t) => {
  // 3 classes; rows: given label, then out-of-sample probabilities
  const rows: [number, number[]][] = [
    [0, [0.9, 0.05, 0.05]],
    [0, [0.8, 0.1, 0.1]],
    [0, [0.1, 0.85, 0.05]], // labelled 0, confidently 1
    [1, [0.1, 0.8, 0.1]],
    [1, [0.2, 0.7, 0.1]],
    [2, [0.1, 0.1, 0.8]],
    [2, [0.05, 0.05, 0.9]],
    [2, [0.7, 0.1, 0.2]], // labelled 2, confidently 0
    [1, [0.3, 0.3, 0.4]], // unsure: no class at its threshold
  ];
  const labels = Int32Array.from(rows, ([label]) => label);
  const probabilities = Float32Array.from(rows.flatMap(([, p]) => p));
  const cl = confidentLearning(probabilities, labels, 3);
  t.deepEqual(cl.thresholds.map((v) => Number(v.toFixed(4))), [0.6, 0.6, 0.6333]);
  t.deepEqual(cl.confidentJoint, [
    [2, 1, 0],
    [0, 2, 0],
    [1, 0, 2],
  ]);
  t.is(cl.confident[8], -1);
  t.deepEqual(labelIssueRows(cl, labels), [2, 7]); // self-confidence 0.1 before 0.2
});

test('map: the same neighbours and seed give the same layout; points that are neighbours land close', (t) => {
  const random = rng(3);
  const n = 60;
  const dim = 8;
  // two well-separated clusters
  const x = Float32Array.from({ length: n * dim }, (_, k) => (Math.floor(k / dim) < 30 ? 1 : -1) * (k % 2) + (random() - 0.5) * 0.2);
  const labels = new Int32Array(n);
  const contents = Int32Array.from({ length: n }, (_, i) => i);
  return findNeighbours({ vectors: x, dim, labels, contents, k: 9, classK: 1, pairCosine: 2 }).then((found) => {
    const config = { ...DEFAULT_AUDIT_CONFIG.map, neighbors: 10, epochs: 100 };
    const a = umapLayout(found.index, found.cosine, n, config);
    const b = umapLayout(found.index, found.cosine, n, config);
    t.deepEqual(a, b);
    const centre = (from: number) => [0, 1].map((axis) => a.filter((_, k) => k % 2 === axis && Math.floor(k / 2) >= from && Math.floor(k / 2) < from + 30).reduce((s, v) => s + v, 0) / 30);
    const [c0, c1] = [centre(0), centre(30)];
    const spread = Math.max(...Array.from({ length: 30 }, (_, i) => Math.hypot(a[i * 2] - c0[0], a[i * 2 + 1] - c0[1])));
    t.true(Math.hypot(c0[0] - c1[0], c0[1] - c1[1]) > spread, 'the clusters are apart on the map');
  });
});
