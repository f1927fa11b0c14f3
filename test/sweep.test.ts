/**
 * `pipeline sweep` as a stage: planning, splits, storage, resume, determinism and the
 * errors a user sees. Features are synthetic clusters written to a real SQLite cache.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { Db } from '../cache/database.js';
import { listItems } from '../cache/features.js';
import { finishedRunKeys, loadRuns, loadSplit } from '../cache/sweeps.js';
import { type SweepConfig, SweepSchema } from '../stages/sweep/config.js';
import { loadConfig } from '../pipeline/config.js';
import { runSweep } from '../stages/sweep.js';
import { planRuns, planVariants } from '../stages/sweep/plan.js';
import { makeSplit } from '../stages/sweep/split.js';
import { meanStd, rankVariants } from '../stages/sweep/ranking.js';
import { makeFeatureCache } from './helpers/feature-cache.js';
import { tempDir } from './helpers/shared.js';

const quiet = () => {};

/** A small sweep: 2 dropouts x 2 learning rates x 2 seeds, short epochs. */
function smallSweep(overrides: Record<string, unknown> = {}): SweepConfig {
  return SweepSchema.parse({
    seeds: [1, 2],
    early_stopping: { monitor: 'val_loss', patience: 3 },
    parameters: {
      dropout: { values: [0, 0.4] },
      learning_rate: { values: [0.001, 0.01] },
      epochs: { value: 12 },
      batch_size: { value: 16 },
    },
    ...overrides,
  });
}

test('a grid is the cartesian product, each variant once per seed', (t) => {
  const sweep = SweepSchema.parse({});
  t.is(planVariants(sweep).length, 16);
  const runs = planRuns(sweep);
  t.is(runs.length, 48);
  t.is(new Set(runs.map((r) => r.runKey)).size, 48);
  t.is(new Set(runs.map((r) => r.variantKey)).size, 16);
  t.deepEqual(runs[0].variant, {
    dropout: 0,
    learning_rate: 0.0003,
    epochs: 50,
    batch_size: 32,
    optimizer: 'adam',
    hidden_units: 0,
    weight_decay: 0,
    label_smoothing: 0,
    class_weight: 'none',
    views: ['original'],
    // resolved to the feature set's own size by runSweep
    sizes: [],
    standardize: false,
  });
});

test('a random sweep draws within its distributions, reproducibly per seed', (t) => {
  const config = (seed: number) =>
    SweepSchema.parse({
      method: 'random',
      runs: 20,
      seed,
      parameters: {
        dropout: { distribution: 'uniform', min: 0.1, max: 0.5 },
        learning_rate: { distribution: 'log_uniform', min: 1e-4, max: 1e-2 },
        optimizer: { values: ['adam', 'sgd'] },
      },
    });
  const a = planVariants(config(3));
  t.is(a.length, 20);
  t.deepEqual(planVariants(config(3)), a);
  t.notDeepEqual(planVariants(config(4)), a);
  for (const v of a) {
    t.true((v.dropout as number) >= 0.1 && (v.dropout as number) <= 0.5);
    t.true((v.learning_rate as number) >= 1e-4 && (v.learning_rate as number) <= 1e-2);
    t.true(v.optimizer === 'adam' || v.optimizer === 'sgd');
  }
});

test('bad sweep configs name the field and the line', (t) => {
  const dir = tempDir(t);
  const cases: [string, RegExp][] = [
    ['sweep:\n  parameters:\n    dropout: {value: 1.0}\n', /:3:\d+: sweep\.parameters\.dropout\.value: dropout must be >= 0 and < 1/],
    ['sweep:\n  parameters:\n    learning_rate: {values: [0.1, 0]}\n', /:3:\d+: sweep\.parameters\.learning_rate/],
    [
      'sweep:\n  method: grid\n  parameters:\n    dropout: {distribution: uniform, min: 0, max: 0.5}\n',
      /:4:\d+: sweep\.parameters\.dropout: a grid cannot enumerate a distribution/,
    ],
    ['sweep:\n  method: random\n', /sweep\.runs: method random needs `runs: N`/],
    ['sweep:\n  seeds: [1]\n  patience: 3\n', /:3:3: sweep\.patience: unknown key/],
    ['sweep:\n  parameters:\n    optimizer: {value: adamw}\n', /:3:\d+: sweep\.parameters\.optimizer/],
    ['sweep:\n  metric: {name: val_loss, goal: maximize}\n', /sweep\.metric: val_accuracy is maximized and val_loss minimized/],
  ];
  for (const [yaml, expected] of cases) {
    const file = join(dir, 'sweep.yaml');
    writeFileSync(file, yaml);
    const error = t.throws(() => loadConfig(file), undefined, yaml);
    t.regex(error!.message, expected, yaml);
    t.false(error!.message.includes('\n'), 'one line');
  }
});

test('a config with only a sweep section is valid and keeps the defaults elsewhere', (t) => {
  const file = join(tempDir(t), 'only-sweep.yaml');
  writeFileSync(file, 'sweep:\n  seeds: [7]\n');
  const config = loadConfig(file);
  t.deepEqual(config.sweep.seeds, [7]);
  t.is(config.model.size.height, 384);
  t.deepEqual(config.sweep.parameters.dropout, { values: [0, 0.2, 0.4, 0.6] });
});

test('official splits are used as recorded', (t) => {
  const { db, featureSet } = makeFeatureCache(join(tempDir(t), 'c.sqlite'), { officialSplits: true });
  const data = runSplit(db, featureSet.id);
  t.deepEqual(data, { train: 72, val: 24, test: 24, source: 'official split lists' });
  db.close();
});

test('the seeded split is stratified 70/15/15 and keeps byte-identical files together', (t) => {
  const items = ['a', 'b'].flatMap((label) =>
    Array.from({ length: 40 }, (_, i) => ({ path: `${label}/${i}.jpg`, label, split: null, sha256: `${label}${i}` })),
  );
  const split = makeSplit(items);
  for (const label of ['a', 'b']) {
    const counts = { train: 0, val: 0, test: 0 };
    for (const row of split) if (row.path.startsWith(`${label}/`)) counts[row.split]++;
    t.deepEqual(counts, { train: 28, val: 6, test: 6 }, label);
  }
  // Three duplicates across classes, as in TrashNet: each lands beside its twin.
  const withDuplicates = [
    ...items,
    ...[0, 1, 2].map((i) => ({ path: `b/dup${i}.jpg`, label: 'b', split: null, sha256: `a${i}` })),
  ];
  const of = new Map(makeSplit(withDuplicates).map((row) => [row.path, row.split]));
  for (const i of [0, 1, 2]) t.is(of.get(`b/dup${i}.jpg`), of.get(`a/${i}.jpg`));
  t.deepEqual(makeSplit([...withDuplicates].reverse()), makeSplit(withDuplicates), 'independent of input order');
});

test.serial('a sweep stores every run; the identical config again trains nothing', async (t) => {
  const { db, featureSet } = makeFeatureCache(join(tempDir(t), 'c.sqlite'));
  const first = await runSweep({ db, featureSet, sweep: smallSweep(), resume: false, log: quiet });
  t.false(first.alreadyDone);
  t.is(first.trainedNow, 8);
  t.is(loadRuns(db, first.sweepId).length, 8);
  t.is(first.ranking.length, 4);
  t.true(first.ranking[0].valAccuracy.mean > 0.6, 'clusters are learnable');
  const split = loadSplit(db, featureSet.id);
  t.is(split.length, 120, 'the split is stored');

  const again = await runSweep({ db, featureSet, sweep: smallSweep(), resume: false, log: quiet });
  t.true(again.alreadyDone);
  t.is(again.sweepId, first.sweepId);
  t.is(again.trainedNow, 0);
  db.close();
});

test.serial('an interrupted sweep resumes without retraining, and ends equal to a clean one', async (t) => {
  const dir = tempDir(t);
  const clean = makeFeatureCache(join(dir, 'clean.sqlite'));
  // Variants of 2 and 12 epochs: stopping after the first run finishes leaves the long ones unfinished.
  const mixedLengths = smallSweep({
    parameters: { dropout: { values: [0, 0.4] }, learning_rate: { value: 0.01 }, epochs: { values: [2, 12] }, batch_size: { value: 16 } },
  });
  const cleanResult = await runSweep({ ...clean, sweep: mixedLengths, resume: false, log: quiet });

  const cut = makeFeatureCache(join(dir, 'cut.sqlite'));
  const stopped = await runSweep({
    ...cut,
    sweep: mixedLengths,
   
    resume: false,
    log: quiet,
    shouldStop: () => finishedRunKeys(cut.db, 1).size >= 1,
  });
  t.true(stopped.interrupted);
  const doneBefore = loadRuns(cut.db, stopped.sweepId);
  t.true(doneBefore.length >= 1 && doneBefore.length < stopped.planned, `stopped part-way (${doneBefore.length} of ${stopped.planned} runs)`);

  const resumed = await runSweep({ ...cut, sweep: mixedLengths, resume: true, log: quiet });
  t.is(resumed.sweepId, stopped.sweepId);
  t.false(resumed.interrupted);
  t.is(resumed.trainedNow, stopped.planned - doneBefore.length, 'finished runs are not retrained');

  const strip = (runs: ReturnType<typeof loadRuns>) =>
    runs.map((r) => ({ ...r, trainSeconds: 0, weights: r.weights.map((w) => [...w.values]), testProbabilities: [...r.testProbabilities] }));
  t.deepEqual(strip(loadRuns(cut.db, resumed.sweepId)), strip(loadRuns(clean.db, cleanResult.sweepId)));
  clean.db.close();
  cut.db.close();
});

test.serial('a feature set with images not yet extracted says which command to run', async (t) => {
  const { db, featureSet } = makeFeatureCache(join(tempDir(t), 'c.sqlite'), { missing: 5 });
  const error = await t.throwsAsync(runSweep({ db, featureSet, sweep: smallSweep(), resume: false, log: quiet }));
  t.regex(error!.message, /missing features for 5 of 120 images .*run `pipeline extract`/);
  db.close();
});

test('ranking orders variants by the mean validation metric over seeds', (t) => {
  const run = (variantKey: string, seed: number, valAccuracy: number, valLoss: number) =>
    ({ variantKey, runKey: `${variantKey}#${seed}`, seed, valAccuracy, valLoss, testAccuracy: 0.5, macroF1: 0.5, params: { v: variantKey } }) as never;
  const runs = [run('x', 1, 0.8, 0.5), run('x', 2, 0.9, 0.4), run('y', 1, 0.86, 0.3), run('y', 2, 0.86, 0.35)];
  const byAccuracy = rankVariants(runs, { name: 'val_accuracy', goal: 'maximize' });
  t.deepEqual(byAccuracy.map((v) => v.variantKey), ['y', 'x']);
  t.is(byAccuracy[1].bestRun.seed, 2, 'best seed within a variant');
  const byLoss = rankVariants(runs, { name: 'val_loss', goal: 'minimize' });
  t.deepEqual(byLoss.map((v) => v.variantKey), ['y', 'x']);
  const { mean, std } = meanStd([1, 2, 3]);
  t.is(mean, 2);
  t.is(std, 1);
});

function runSplit(db: Db, featureSet: string) {
  const rows = makeSplit(listItems(db, featureSet));
  const count = (name: string) => rows.filter((r) => r.split === name).length;
  return { train: count('train'), val: count('val'), test: count('test'), source: rows[0].source };
}
