/**
 * The whole job on real data, as a user runs it: extract real MobileNetV2 features of 120
 * TrashNet photos, sweep heads from the cache, report (terminal, JSON, HTML), export the
 * winner and predict with it. The exported model must agree with the sweep's own test
 * predictions: same files, same mistakes.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expectOneLineError, runPipeline, trashnetSlice } from './helpers/cli.js';
import { SHARED_MODEL_100, serialTestWithShared, tempDir } from './helpers/shared.js';

const CONFIG = `
dataset: {root: trashnet}
model: {weights: ${JSON.stringify(SHARED_MODEL_100)}, size: 224x224}
cache: {db: cache.sqlite}
engine: {backend: wasm}
sweep:
  seeds: [1, 2]
  early_stopping: {monitor: val_loss, patience: 5}
  parameters:
    dropout: {values: [0.0, 0.4]}
    learning_rate: {values: [0.001, 0.003]}
    epochs: {value: 40}
    batch_size: {value: 16}
`;

interface Facts {
  sweep: { id: number; status: string; split_sizes: { train: number; val: number; test: number } };
  labels: string[];
  best: {
    params: Record<string, unknown>;
    val_accuracy: number;
    test_accuracy: number;
    macro_f1: number;
    per_class: { label: string }[];
    confusion: number[][];
    misclassified: { path: string; predicted_label: string }[];
  };
  runs: unknown[];
}

serialTestWithShared('smoke: extract, sweep, report, export and predict on real TrashNet photos', async (t) => {
  const cwd = tempDir(t, 'pipeline-smoke-all-');
  await trashnetSlice(join(cwd, 'trashnet'), 20);
  await writeFile(join(cwd, 'config.yaml'), CONFIG);

  const extract = await runPipeline(cwd, ['extract']);
  t.is(extract.code, 0, extract.stderr);
  t.regex(extract.stdout, /120 extracted/);

  const sweep = await runPipeline(cwd, ['sweep']);
  t.is(sweep.code, 0, sweep.stderr);
  t.regex(sweep.stdout, /sweep 1 done: 8 runs trained now, 8 planned/);
  const again = await runPipeline(cwd, ['sweep']);
  t.regex(again.stderr, /already ran this exact configuration/);
  t.regex(again.stdout, /0 runs trained now/);

  const text = await runPipeline(cwd, ['report']);
  t.is(text.code, 0, text.stderr);
  for (const part of [/winner: dropout=/, /precision/, /true \\ predicted/, /MobileNetV2 alpha 1 at 224x224/]) t.regex(text.stdout, part);

  const json = await runPipeline(cwd, ['report', '--json']);
  t.is(json.code, 0, json.stderr);
  const facts = JSON.parse(json.stdout) as Facts;
  t.is(facts.sweep.id, 1);
  t.is(facts.runs.length, 8);
  t.deepEqual(facts.labels, ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash']);
  t.is(facts.best.per_class.length, 6);
  t.is(facts.best.confusion.length, 6);
  const tested = facts.sweep.split_sizes.test;
  t.log(`split ${JSON.stringify(facts.sweep.split_sizes)}; winner ${JSON.stringify(facts.best.params)}: val ${facts.best.val_accuracy}, test ${facts.best.test_accuracy}`);
  t.true(facts.best.test_accuracy > 0.5, `real features classify far above chance (1/6): ${facts.best.test_accuracy}`);

  const html = await runPipeline(cwd, ['report', '--html', 'report.html']);
  t.is(html.code, 0, html.stderr);
  const page = await readFile(join(cwd, 'report.html'), 'utf8');
  t.is((page.match(/<figure[^>]*data-plot=/g) ?? []).length, 4);

  // Bad requests on a cache that has a sweep: one line each, exit 1.
  for (const [args, expected] of [
    [['report', '--sweep', '99'], /--sweep 99: no such sweep/],
    [['report', '--html', join(cwd, 'no-such-folder', 'r.html')], /--html .*r\.html: folder .*no-such-folder does not exist/],
    [['export', '--run', 'nope', '--out', 'nope'], /--run nope: no such run/],
  ] as [string[], RegExp][]) {
    t.regex(expectOneLineError(t, await runPipeline(cwd, args), args.join(' '), true), expected);
  }

  const exported = await runPipeline(cwd, ['export', '--out', 'model']);
  t.is(exported.code, 0, exported.stderr);
  const metadata = JSON.parse(await readFile(join(cwd, 'model', 'metadata.json'), 'utf8'));
  t.deepEqual(metadata.labels, facts.labels);

  // Every test image of the slice through the exported model, plus one corrupt file.
  const csv = await runPipeline(cwd, ['export-features', '--out', 'features']);
  t.is(csv.code, 0, csv.stderr);
  const testPaths = (await readFile(join(cwd, 'features', 'index.csv'), 'utf8'))
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.split(','))
    .filter((cells) => cells[2] === 'test')
    .map((cells) => cells[0]);
  t.is(testPaths.length, tested);
  await writeFile(join(cwd, 'broken.jpg'), 'not an image');
  const predict = await runPipeline(cwd, ['predict', ...testPaths.map((p) => join('trashnet', p)), 'broken.jpg', '--model', 'model', '--json']);
  t.is(predict.code, 3, 'a failed file makes the exit code 3 (some inputs failed)');
  const predictions = JSON.parse(predict.stdout).predictions as ({ file: string; ok: true; top: { label: string }[] } | { file: string; ok: false; error: string })[];
  t.is(predictions.length, tested + 1);
  const broken = predictions.at(-1)!;
  t.false(broken.ok);

  const sweepMistakes = new Map(facts.best.misclassified.map((m) => [m.path, m.predicted_label]));
  testPaths.forEach((path, i) => {
    const p = predictions[i];
    if (!p.ok) return t.fail(`${path}: ${p.error}`);
    const label = path.split('/')[0];
    const predicted = p.top[0].label;
    if (predicted === label) t.false(sweepMistakes.has(path), `${path}: the sweep got it wrong, the exported model right`);
    else t.is(sweepMistakes.get(path), predicted, `${path}: same mistake as the sweep`);
  });
});
