/**
 * How far the one-file ONNX classifier (backbone/onnx-classifier.ts, which resizes inside
 * the graph) lands from the same classifier fed the way `pipeline extract` feeds the
 * backbone (sharp's resize of each view), with a real trained head, on a sweep's test
 * images. It reports probability differences and top-1 agreement, and, in passing, the
 * model's time per image (decoded pixels in, probabilities out) on ORT's CPU provider.
 *
 *   node dist/bench/classifier-resize.js --db runs/t224.sqlite [--images N]
 *
 * The database needs a finished sweep (the latest is used, with its best run) on features
 * of a dataset that is still on disk.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type ClassifierSpec, VIEW_NAMES, type ViewName } from '../backbone/classifier-spec.js';
import { headFromArrays } from '../backbone/layers-model.js';
import { CLASSIFIER_INPUT, CLASSIFIER_OUTPUT, buildClassifierOnnx } from '../backbone/onnx-classifier.js';
import type { ResizeMode } from '../backbone/preprocessing.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { openDatabase } from '../cache/database.js';
import { latestExtractRun, listItems, loadVectors } from '../cache/features.js';
import { loadSplit } from '../cache/sweeps.js';
import { chooseSweep, findRun, sweepResults } from '../stages/report.js';
import { argmax } from '../core/arrays.js';
import { EngineBySize, decodeFull, maxAbsDiff, referenceClassifier, sharpResized } from '../test/helpers/classifier-reference.js';
import { median } from './machine.js';

const { values: args } = parseArgs({ options: { db: { type: 'string' }, images: { type: 'string' } } });
if (!args.db) throw new Error('usage: node dist/bench/classifier-resize.js --db FILE [--images N]');

const db = openDatabase(args.db, { readonly: true });
const results = await sweepResults(db, await chooseSweep(db, undefined));
const run = findRun(results, 'best');
const featureSet = results.featureSet;
const weights = await backboneWeights(await readWeightFile(featureSet.modelSource));
const head = headFromArrays(run.weights, weights.arch.featureDim, 0);
const labels = run.perClass.map((c) => c.label);
const datasetRoot = latestExtractRun(db, featureSet.id)!.datasetRoot;

const testPaths = new Set(loadSplit(db, featureSet.id).filter((row) => row.split === 'test').map((row) => row.path));
const allTest = listItems(db, featureSet.id).filter((item) => testPaths.has(item.path));
const count = Math.min(Number(args.images ?? allTest.length), allTest.length);
const items = Array.from({ length: count }, (_, i) => allTest[Math.floor((i * allTest.length) / count)]);
const cached = loadVectors(db, featureSet.id, items.map((item) => item.sha256));
const size = { height: featureSet.height, width: featureSet.width };
console.log(`sweep ${results.sweep.id}, run ${run.runKey} (test accuracy ${(run.testAccuracy * 100).toFixed(2)}%), ` +
  `${featureSet.height}x${featureSet.width} ${featureSet.resize}, ${items.length} test images`);

const ort = await import('onnxruntime-node');
for (const views of [['original'], VIEW_NAMES] as const) {
  const spec: ClassifierSpec = {
    labels,
    sizes: [size],
    resize: featureSet.resize as ResizeMode,
    views: views as readonly ViewName[],
    standardize: null,
    layers: head.layers.map((layer, i) => ({ ...layer, activation: i === head.layers.length - 1 ? 'softmax' : 'relu' })),
  };
  const model = buildClassifierOnnx(weights, spec);
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const engines = new EngineBySize(weights, views.length);
  const diffs: number[] = [];
  const milliseconds: number[] = [];
  let agree = 0;
  let onnxCorrect = 0;
  let sharpCorrect = 0;
  let cacheDiff = 0;
  try {
    for (const item of items) {
      const bytes = await readFile(join(datasetRoot, item.path));
      const image = await decodeFull(bytes);
      const started = performance.now();
      const output = await session.run({ [CLASSIFIER_INPUT]: new ort.Tensor('uint8', image.data, [image.height, image.width, 3]) });
      milliseconds.push(performance.now() - started);
      const onnx = output[CLASSIFIER_OUTPUT].data as Float32Array;
      const viaSharp = await referenceClassifier(engines, spec, sharpResized(bytes, image, spec.resize));
      // The sharp path's original view must reproduce the cached feature the head was trained on.
      cacheDiff = Math.max(cacheDiff, maxAbsDiff(viaSharp.features[0], cached.get(item.sha256)!));
      diffs.push(maxAbsDiff(onnx, viaSharp.probabilities));
      const truth = labels.indexOf(item.label);
      agree += Number(argmax(onnx) === argmax(viaSharp.probabilities));
      onnxCorrect += Number(argmax(onnx) === truth);
      sharpCorrect += Number(argmax(viaSharp.probabilities) === truth);
    }
  } finally {
    await engines.close();
    await session.release();
  }
  const sorted = [...diffs].sort((a, b) => a - b);
  const percent = (n: number) => `${((n / items.length) * 100).toFixed(2)}%`;
  console.log(`\nviews: ${views.join(', ')} (model ${(model.length / 2 ** 20).toFixed(2)} MiB, median ${median(milliseconds).toFixed(1)} ms per image)`);
  console.log(`  max abs probability diff, ONNX resize vs sharp resize: median ${median(diffs).toExponential(2)}, ` +
    `95th percentile ${sorted[Math.floor(0.95 * (sorted.length - 1))].toExponential(2)}, max ${sorted[sorted.length - 1].toExponential(2)}`);
  console.log(`  top-1 agreement ${percent(agree)}; accuracy ONNX ${percent(onnxCorrect)}, sharp ${percent(sharpCorrect)}`);
  console.log(`  sharp path vs cached features (original view): max abs diff ${cacheDiff.toExponential(2)}`);
}
db.close();
