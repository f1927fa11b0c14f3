/**
 * Export and predict reproduce a run that uses several views and sizes with
 * standardisation: features extracted for real (onnx engine), a run stored the way the
 * sweep stores such runs (test/helpers/views-run.ts), then `pipeline export` (TF.js and
 * ONNX) and `pipeline predict` on the run's test images must give back the stored test
 * probabilities. On a generated dataset with a random tiny backbone, and on a TrashNet
 * slice with the real MobileNetV2 1.0 when ../shared exists.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { InputSize } from '../backbone/preprocessing.js';
import { openDatabase } from '../cache/database.js';
import { type StoredRun, saveRun } from '../cache/sweeps.js';
import { UserError } from '../core/errors.js';
import { type ExportMetadata, exportModel } from '../stages/export.js';
import { runExtract } from '../stages/extract.js';
import { predictFiles, releaseModel } from '../stages/predict.js';
import type { ViewName } from '../backbone/classifier-spec.js';
import * as tf from '@tensorflow/tfjs';
import { runPipeline, trashnetSlice } from './helpers/cli.js';
import { OnnxResizer, decodeFull, viewImage } from './helpers/classifier-reference.js';
import { loadTfjsExport } from './helpers/export-fixture.js';
import { makeDataset } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { SHARED_MODEL_100, fileTempDir, serialTestWithShared } from './helpers/shared.js';
import { type ViewsRun, storeViewsRun } from './helpers/views-run.js';

const temp = fileTempDir('pipeline-export-views-');
test.after.always(() => temp.remove());

/** The bound export + predict must hold against the sweep's stored test probabilities. */
const STORED_TOLERANCE = 1e-4;

interface Setup {
  readonly root: string;
  readonly dbPath: string;
  readonly stored: ViewsRun;
}

/** Extracts `views` at `sizes` over the dataset and stores a standardized run over all of them. */
async function setup(name: string, root: string, modelJson: string, sizes: InputSize[], views: string[], hiddenUnits: number): Promise<Setup> {
  const dbPath = join(temp.dir, name, 'cache.sqlite');
  const extract = await runExtract({
    dataset: { root, url: null, sha256: null, splits: null },
    model: { weights: modelJson, size: sizes, resize: 'fill', views },
    db: dbPath,
    backend: 'onnx',
    batch: 8,
    concurrency: 2,
  });
  const db = openDatabase(dbPath);
  try {
    const stored = await storeViewsRun(db, { featureSets: extract.featureSets, views, standardize: true, hiddenUnits });
    return { root, dbPath, stored };
  } finally {
    db.close();
  }
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
};
const argmax = (p: ArrayLike<number>) => Array.prototype.indexOf.call(p, Math.max(...Array.from(p))) as number;

/** predict (library) over the run's test images; full probability vectors in member order. */
async function predictTest(s: Setup, modelDir: string): Promise<Float32Array[]> {
  const files = s.stored.test.map((m) => join(s.root, m.path));
  const byFile = new Map<string, Float32Array>();
  // 6 rows: 3 files of 2 views per model call, so rows of different files share a call.
  const result = await predictFiles(files, modelDir, { batchSize: 6, onProbabilities: (file, p) => byFile.set(file, p) });
  for (const p of result.predictions) if (!p.ok) throw new Error(`${p.file}: ${p.error}`);
  return files.map((file) => byFile.get(file)!);
}

/** Compares predictions with the stored test probabilities; returns the largest difference. */
function compareWithStored(t: ExecutionContext, s: Setup, predicted: readonly Float32Array[], tolerance: number, what: string): number {
  const classes = s.stored.labels.length;
  const stored = s.stored.run.testProbabilities;
  let worst = 0;
  predicted.forEach((p, i) => {
    const row = stored.subarray(i * classes, (i + 1) * classes);
    const diff = maxAbsDiff(p, row);
    worst = Math.max(worst, diff);
    t.true(diff <= tolerance, `${what}, ${s.stored.test[i].path}: max abs diff ${diff} from the stored test probabilities`);
  });
  t.log(`${what}: ${predicted.length} test images, max abs diff from the sweep's stored test probabilities ${worst.toExponential(2)}`);
  return worst;
}

/** The check would catch a predict that skipped the view averaging: view 0 alone is far from the stored mean. */
function assertAveragingMatters(t: ExecutionContext, s: Setup) {
  const classes = s.stored.labels.length;
  const stored = s.stored.run.testProbabilities;
  const gaps = s.stored.firstViewProbabilities.map((p, i) => maxAbsDiff(p, stored.subarray(i * classes, (i + 1) * classes)));
  t.true(Math.max(...gaps) > 100 * STORED_TOLERANCE, `view 0 alone is within ${Math.max(...gaps)} of the average`);
}

/** ONNX (resize inside the graph) against TF.js (sharp's resize): largest probability gap and top-1 agreement. */
function compareRuntimes(t: ExecutionContext, onnx: readonly Float32Array[], tfjs: readonly Float32Array[], what: string) {
  const gaps = onnx.map((p, i) => maxAbsDiff(p, tfjs[i]));
  const agree = onnx.filter((p, i) => argmax(p) === argmax(tfjs[i])).length;
  const worst = Math.max(...gaps);
  const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
  t.log(`${what}: ONNX export vs TF.js export over ${onnx.length} images: max abs probability diff ${worst.toExponential(2)}, mean ${mean.toExponential(2)}, top-1 agrees on ${agree}/${onnx.length}`);
  return { worst, mean, agree };
}

/**
 * The TF.js export fed the ONNX graph's own resize (ONNX Resize alone, test/helpers/classifier-reference.ts)
 * instead of sharp's: what the ONNX export must equal when only the backbone's arithmetic differs.
 */
async function tfjsOnOnnxResize(modelDir: string, files: readonly string[]): Promise<Float32Array[]> {
  const loaded = await loadTfjsExport(modelDir);
  const resizer = await OnnxResizer.create();
  try {
    const { sizes, views, labels, resize } = loaded.recipe;
    const out: Float32Array[] = [];
    for (const file of files) {
      const image = await decodeFull(readFileSync(file));
      const inputs: tf.Tensor4D[] = [];
      for (const size of sizes) {
        const rows = [];
        for (const view of views) rows.push(Float32Array.from((await resizer.resize(viewImage(image, view.name as ViewName), size, resize)).data));
        const flat = new Float32Array(rows.length * size.height * size.width * 3);
        rows.forEach((row, v) => flat.set(row, v * row.length));
        inputs.push(tf.tensor4d(flat, [views.length, size.height, size.width, 3]));
      }
      const output = loaded.model.predict(inputs.length > 1 ? inputs : inputs[0]) as tf.Tensor;
      const values = (await output.data()) as Float32Array;
      tf.dispose([output, ...inputs]);
      out.push(Float32Array.from(labels, (_, c) => views.reduce((sum, __, v) => sum + values[v * labels.length + c], 0) / views.length));
    }
    return out;
  } finally {
    await resizer.release();
    await releaseModel(loaded);
  }
}

/** Same math, different runtimes (tfjs-wasm against ONNX Runtime), same 8-bit inputs. */
const RUNTIME_TOLERANCE = 1e-4;

let generated: Promise<Setup> | undefined;
/** 3 classes x 12 generated 64x48 photos, tiny random backbone, views original + hflip at 48x64 and 40x40. */
function generatedSetup(): Promise<Setup> {
  generated ??= (async () => {
    const dataset = await makeDataset(join(temp.dir, 'generated', 'data'), { perClass: 12, width: 64, height: 48 });
    const { modelJson } = await writeRandomModel(join(temp.dir, 'generated', 'model'), { alpha: 0.35, seed: 21 });
    return setup('generated', dataset.root, modelJson, [{ height: 48, width: 64 }, { height: 40, width: 40 }], ['original', 'hflip'], 16);
  })();
  return generated;
}

test.serial('2 views x 2 sizes + standardize, TF.js export: predict matches the stored test probabilities (1e-4); metadata lists sizes and views', async (t) => {
  const s = await generatedSetup();
  assertAveragingMatters(t, s);
  const db = openDatabase(s.dbPath, { readonly: true });
  const out = join(temp.dir, 'generated', 'tfjs');
  let metadata: ExportMetadata;
  try {
    ({ metadata } = await exportModel({ db, run: 'best', out, log: () => {} }));
  } finally {
    db.close();
  }
  t.deepEqual(metadata.sizes, ['48x64', '40x40']);
  t.deepEqual(metadata.views, ['original', 'hflip']);
  t.false(metadata.views_in_model);
  t.deepEqual(metadata.standardize, { dim: 2 * 1280, in_model: true });
  t.deepEqual(metadata.inputs.map((i) => [i.name, i.height, i.width]), [['input_1', 48, 64], ['input_2', 40, 40]]);
  t.deepEqual(metadata.params.views, ['original', 'hflip']);
  const modelJson = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
  const layers = modelJson.modelTopology.config.layers as { class_name: string; config: { name: string } }[];
  t.is(layers.filter((l) => l.config.name === 'Conv1').length, 1, 'one backbone, shared by both inputs');
  t.is(layers.find((l) => l.config.name === 'standardize')?.class_name, 'BatchNormalization');
  t.is(layers.find((l) => l.config.name === 'concatenate')?.class_name, 'Concatenate');

  compareWithStored(t, s, await predictTest(s, out), STORED_TOLERANCE, 'TF.js export, generated');
});

test.serial('CLI: export --format onnx writes one model.onnx; predict --model runs it and agrees with predict of the TF.js export', async (t) => {
  const s = await generatedSetup();
  const dir = join(temp.dir, 'generated');
  const files = s.stored.test.map((m) => join(s.root, m.path));
  const probabilities = async (model: string) => {
    const r = await runPipeline(dir, ['predict', ...files, '--model', model, '--json', '--top', '99']);
    t.is(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { labels: string[]; predictions: { file: string; top: { label: string; probability: number }[] }[] };
    return json.predictions.map((p) => Float32Array.from(json.labels, (label) => p.top.find((c) => c.label === label)!.probability));
  };
  for (const format of ['tfjs', 'onnx']) {
    const r = await runPipeline(dir, ['export', '--db', s.dbPath, '--out', `cli-${format}`, '--format', format]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`as model\\.${format === 'onnx' ? 'onnx' : 'json'} `));
    t.regex(r.stdout, /views {4}original, hflip/);
  }
  const metadata = JSON.parse(readFileSync(join(dir, 'cli-onnx', 'metadata.json'), 'utf8')) as ExportMetadata;
  t.deepEqual(metadata.model, { runtime: 'onnx', file: 'model.onnx' });
  t.true(metadata.views_in_model);
  t.deepEqual(metadata.inputs, [{ name: 'image', height: null, width: null, channels: 3, layout: 'HWC', dtype: 'uint8', range: [0, 255] }]);
  t.deepEqual(metadata.output, { name: 'probabilities', activation: 'softmax', classes: 3 });

  // A file that cannot be decoded gets its own error beside the others' predictions (exit 3), as with a TF.js export.
  writeFileSync(join(dir, 'broken.jpg'), 'not an image');
  const broken = await runPipeline(dir, ['predict', files[0], 'broken.jpg', '--model', join('cli-onnx', 'model.onnx'), '--json']);
  t.is(broken.code, 3, broken.stderr);
  t.deepEqual((JSON.parse(broken.stdout) as { predictions: { ok: boolean }[] }).predictions.map((p) => p.ok), [true, false]);

  const tfjs = await probabilities('cli-tfjs');
  const onnx = await probabilities('cli-onnx');
  compareWithStored(t, s, tfjs, STORED_TOLERANCE, 'CLI predict, TF.js export');
  // The graph's cubic resize is not sharp's lanczos3: on these 64x48 noise photos and this
  // random head on standardized features, the probabilities move by a few hundredths.
  const { worst } = compareRuntimes(t, onnx, tfjs, 'generated 64x48 photos, random alpha-0.35 backbone');
  t.true(worst < 0.15, `ONNX and TF.js exports differ by ${worst}`);
  // Given the graph's own resize, the TF.js export computes what the ONNX model does.
  const same = await tfjsOnOnnxResize(join(dir, 'cli-tfjs'), files);
  const gap = Math.max(...onnx.map((p, i) => maxAbsDiff(p, same[i])));
  t.log(`ONNX export vs TF.js export fed the ONNX resize: max abs diff ${gap.toExponential(2)}`);
  t.true(gap <= RUNTIME_TOLERANCE, `ONNX export and TF.js export on the same pixels differ by ${gap}`);
  for (const p of onnx) t.true(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-5);
});

test.serial('runs that cannot be exported as asked are one-line UserErrors naming the field', async (t) => {
  const s = await generatedSetup();
  const db = openDatabase(s.dbPath);
  try {
    const base = s.stored.run;
    const variant = (key: string, params: Record<string, unknown>, weights = base.weights): StoredRun => ({
      ...base,
      runKey: key,
      variantKey: key,
      params: { ...base.params, ...params } as StoredRun['params'],
      weights,
    });
    const cases: [StoredRun, RegExp, 'tfjs' | 'onnx'][] = [
      [variant('no-std', {}, base.weights.filter((w) => !w.name.startsWith('standardize/'))), /params\.standardize: true, but the run has no standardize\/mean weights/, 'tfjs'],
      [variant('bad-size', { sizes: ['48x64', 'big'] }), /params\.sizes: "big" is not HxW/, 'tfjs'],
      [variant('bad-view', { views: ['original', 'sideways'] }), /params\.views: unknown view "sideways"/, 'tfjs'],
      [variant('one-size', { sizes: ['48x64'] }), /standardize\/mean has 2560 values, expected 1280/, 'tfjs'],
    ];
    for (const [run] of cases) saveRun(db, s.stored.sweepId, run);
    for (const [run, message, format] of cases) {
      const error = await t.throwsAsync(exportModel({ db, run: run.runKey, out: join(temp.dir, 'generated', `bad-${run.runKey}`), format, log: () => {} }), { instanceOf: UserError });
      t.regex(error!.message, message, run.runKey);
      t.false(error!.message.includes('\n'));
    }
  } finally {
    db.close();
  }
});

test.serial('a run with crop views exports to ONNX too: the graph cuts the windows as extraction does', async (t) => {
  const s = await generatedSetup();
  const db = openDatabase(s.dbPath);
  const key = 'crops#seed=1';
  try {
    const base = s.stored.run;
    saveRun(db, s.stored.sweepId, { ...base, runKey: key, variantKey: 'crops', params: { ...base.params, views: ['crop:0.8:center', 'crop:0.7:br'] } as unknown as StoredRun['params'] });
    for (const format of ['tfjs', 'onnx'] as const) await exportModel({ db, run: key, out: join(temp.dir, 'generated', `crops-${format}`), format, log: () => {} });
  } finally {
    db.close();
  }
  const files = s.stored.test.map((m) => join(s.root, m.path));
  const onnx = await predictTest(s, join(temp.dir, 'generated', 'crops-onnx'));
  const tfjs = await predictTest(s, join(temp.dir, 'generated', 'crops-tfjs'));
  // Logged, not bounded: these windows are enlarged to the input size (34x45 -> 48x64), where
  // ONNX's cubic resize and sharp's differ most, on noise photos and a random head.
  compareRuntimes(t, onnx, tfjs, 'crop views (enlarged), generated photos');
  const same = await tfjsOnOnnxResize(join(temp.dir, 'generated', 'crops-tfjs'), files);
  const gap = Math.max(...onnx.map((p, i) => maxAbsDiff(p, same[i])));
  t.log(`crop views: ONNX export vs TF.js export fed the ONNX resize: max abs diff ${gap.toExponential(2)}`);
  t.true(gap <= RUNTIME_TOLERANCE, `ONNX export and TF.js export on the same pixels differ by ${gap}`);
});

serialTestWithShared('TrashNet slice, real MobileNetV2 1.0, 2 views x 2 sizes + standardize: predict of the TF.js export matches the stored test probabilities; ONNX measured', async (t) => {
  const root = await trashnetSlice(join(temp.dir, 'trashnet', 'data'), 8);
  const s = await setup('trashnet', root, SHARED_MODEL_100, [{ height: 224, width: 224 }, { height: 192, width: 256 }], ['original', 'hflip'], 0);
  t.true(s.stored.test.length >= 4, `${s.stored.test.length} test images`);
  assertAveragingMatters(t, s);
  const db = openDatabase(s.dbPath, { readonly: true });
  try {
    await exportModel({ db, run: 'best', out: join(temp.dir, 'trashnet', 'tfjs'), log: () => {} });
    await exportModel({ db, run: 'best', out: join(temp.dir, 'trashnet', 'onnx'), format: 'onnx', log: () => {} });
  } finally {
    db.close();
  }
  const tfjs = await predictTest(s, join(temp.dir, 'trashnet', 'tfjs'));
  compareWithStored(t, s, tfjs, STORED_TOLERANCE, 'TF.js export, TrashNet');
  const onnx = await predictTest(s, join(temp.dir, 'trashnet', 'onnx'));
  const gapToStored = s.stored.test.map((_, i) => maxAbsDiff(onnx[i], s.stored.run.testProbabilities.subarray(i * 6, (i + 1) * 6)));
  t.log(`ONNX export vs stored test probabilities: max abs diff ${Math.max(...gapToStored).toExponential(2)}`);
  const { worst, agree } = compareRuntimes(t, onnx, tfjs, 'TrashNet 512x384 photos, MobileNetV2 1.0');
  t.true(worst < 0.15, `ONNX and TF.js exports differ by ${worst}`);
  t.true(agree >= onnx.length - 1, `top-1 agrees on ${agree}/${onnx.length}`);
  const same = await tfjsOnOnnxResize(join(temp.dir, 'trashnet', 'tfjs'), s.stored.test.map((m) => join(s.root, m.path)));
  const gap = Math.max(...onnx.map((p, i) => maxAbsDiff(p, same[i])));
  t.log(`ONNX export vs TF.js export fed the ONNX resize: max abs diff ${gap.toExponential(2)}`);
  t.true(gap <= RUNTIME_TOLERANCE, `ONNX export and TF.js export on the same pixels differ by ${gap}`);
});
