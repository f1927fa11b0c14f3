/**
 * Sweeps over views, sizes and standardisation, on generated features written to a real
 * SQLite cache: validation picks views where they help and refuses them where they hurt,
 * z-scores use train statistics only, sizes are concatenated in the order given, and a
 * view or size that is not cached is a one-line error naming the field and the fix.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { getSweep, loadRuns, loadSweepMembers } from '../cache/sweeps.js';
import { getFeatureSet, loadVectors } from '../cache/features.js';
import { type SweepConfig, SweepSchema } from '../stages/sweep/config.js';
import { STANDARDIZE_MEAN, STANDARDIZE_STD, assembleInputs, loadCachedInputs, membersHash, runSweep, sweepFeatureSet } from '../stages/sweep.js';
import { gatherReport, chooseSweep } from '../stages/report.js';
import { reportText } from '../stages/report/text.js';
import { heatmapAxes, heatmapCells } from '../stages/report/charts.js';
import { loadConfig } from '../pipeline/config.js';
import { makeViewsCache } from './helpers/feature-cache.js';
import { tempDir } from './helpers/shared.js';

const quiet = () => {};
const FOUR = ['original', 'hflip', 'vflip', 'rot180'];

function viewsSweep(parameters: Record<string, unknown>): SweepConfig {
  return SweepSchema.parse({
    seeds: [1, 2],
    early_stopping: { monitor: 'val_loss', patience: 4 },
    parameters: {
      dropout: { value: 0 },
      learning_rate: { value: 0.01 },
      epochs: { value: 25 },
      batch_size: { value: 32 },
      ...parameters,
    },
  });
}

for (const kind of ['help', 'hurt'] as const) {
  test(`views that ${kind}: the sweep picks ${kind === 'help' ? 'the four views' : 'the original alone'} on val`, async (t) => {
    const { db, featureSets } = makeViewsCache(join(tempDir(t), 'c.sqlite'), { kind });
    try {
      const sweep = viewsSweep({ views: { values: [['original'], FOUR] } });
      const outcome = await runSweep({ db, featureSet: featureSets[0], sweep, resume: false, log: quiet });
      t.false(outcome.interrupted);
      const [winner, loser] = outcome.ranking;
      t.deepEqual(winner.params.views, kind === 'help' ? FOUR : ['original']);
      t.true(winner.valAccuracy.mean > loser.valAccuracy.mean, `${winner.valAccuracy.mean} > ${loser.valAccuracy.mean}`);
      // The test set agrees with val here (nothing is chosen on it).
      t.true(winner.testAccuracy.mean > loser.testAccuracy.mean);
      // Every run carries the contract keys; a four-view run also knows its view-0 accuracy.
      for (const run of loadRuns(db, outcome.sweepId)) {
        t.deepEqual(run.params.sizes, ['32x32']);
        t.is(run.params.standardize, false);
        t.true(Array.isArray(run.params.views));
        t.is(typeof run.testAccuracySingleView, 'number');
        if ((run.params.views as string[]).length === 1) t.is(run.testAccuracySingleView, run.testAccuracy);
        t.false(run.weights.some((w) => w.name.startsWith('standardize/')));
      }
      if (kind === 'hurt') {
        // Averaging over views that swap the label leaves a coin toss; view 0 alone of the same runs does better.
        const four = outcome.ranking.find((v) => (v.params.views as string[]).length === 4)!;
        const single = four.runs.reduce((a, r) => a + r.testAccuracySingleView!, 0) / four.runs.length;
        t.true(single > four.testAccuracy.mean, `${single} > ${four.testAccuracy.mean}`);
      }
      const facts = await gatherReport(db, await chooseSweep(db, outcome.sweepId));
      t.deepEqual(facts.best.inputs, { sizes: ['32x32'], views: winner.params.views as string[], standardize: false });
      t.deepEqual(facts.varying_params, ['views']);
      t.deepEqual(heatmapAxes(facts.varying_params), ['views', 'dropout']);
      t.deepEqual(heatmapCells(facts.variants, ['views', 'dropout']).map((c) => c.row).sort(), ['original', FOUR.join('+')].sort());
      t.regex(reportText(facts), kind === 'help' ? /inputs: size 32x32, views original, hflip, vflip, rot180 \(trained on, averaged at val\/test\)/ : /inputs: size 32x32, view original,/);
    } finally {
      db.close();
    }
  });
}

test('standardize z-scores every split with train statistics (views included) and stores them with the weights', async (t) => {
  const { db, featureSets } = makeViewsCache(join(tempDir(t), 'c.sqlite'), { kind: 'help', perClass: 20, dim: 16 });
  try {
    const [set] = featureSets;
    const sets = new Map([['32x32', set]]);
    const cache = await loadCachedInputs(db, set, sets, ['original', 'hflip'], quiet);
    const { data, standardization } = assembleInputs(cache, { sizes: ['32x32'], views: ['original', 'hflip'], standardize: true });
    // Independently: the raw vectors of train images, both views, in float64.
    const trainHashes = cache.members.parts.train.hashes;
    const raw = (hash: string, view: string) => loadVectors(db, set.id, [hash], view).get(hash)!;
    const rows = trainHashes.flatMap((hash) => [raw(hash, 'original'), raw(hash, 'hflip')]);
    t.is(rows.length, 36 * 2);
    for (const d of [0, 7, 15]) {
      const mean = rows.reduce((a, r) => a + r[d], 0) / rows.length;
      const std = Math.sqrt(rows.reduce((a, r) => a + (r[d] - mean) ** 2, 0) / rows.length);
      t.true(Math.abs(standardization!.mean[d] - mean) < 1e-6, `mean[${d}]`);
      t.true(Math.abs(standardization!.std[d] - std) < 1e-6, `std[${d}]`);
      // A train column now has mean 0 and std 1; val keeps the train statistics (not its own).
      const column = Array.from({ length: rows.length }, (_, r) => data.train.x[r * 16 + d]);
      t.true(Math.abs(column.reduce((a, b) => a + b, 0) / rows.length) < 1e-5);
      const valHash = cache.members.parts.val.hashes[2];
      const expected = (raw(valHash, 'hflip')[d] - standardization!.mean[d]) / standardization!.std[d];
      t.is(data.val.x[(2 * 2 + 1) * 16 + d], Math.fround(expected));
    }
    // Through a sweep: the run stores exactly these statistics under the contract names.
    const sweep = viewsSweep({ views: { value: ['original', 'hflip'] }, standardize: { values: [false, true] }, epochs: { value: 3 } });
    const outcome = await runSweep({ db, featureSet: set, sweep, resume: false, log: quiet });
    const runs = loadRuns(db, outcome.sweepId);
    const scored = runs.filter((r) => r.params.standardize === true);
    t.is(scored.length, 2);
    for (const run of scored) {
      const mean = run.weights.find((w) => w.name === STANDARDIZE_MEAN)!;
      const std = run.weights.find((w) => w.name === STANDARDIZE_STD)!;
      t.deepEqual(mean.shape, [16]);
      t.deepEqual([...mean.values], [...standardization!.mean]);
      t.deepEqual([...std.values], [...standardization!.std]);
    }
    for (const run of runs.filter((r) => r.params.standardize === false)) t.is(run.weights.length, 2);
  } finally {
    db.close();
  }
});

test('sizes are concatenated in the order the sweep lists them', async (t) => {
  const sizes = [{ height: 32, width: 32 }, { height: 48, width: 64 }];
  const { db, featureSets } = makeViewsCache(join(tempDir(t), 'c.sqlite'), { kind: 'help', sizes, perClass: 10, dim: 8 });
  try {
    const [small, large] = featureSets;
    const sets = new Map([['32x32', small], ['48x64', large]]);
    const cache = await loadCachedInputs(db, small, sets, ['original', 'vflip'], quiet);
    const hash = cache.members.parts.test.hashes[1];
    const vector = (set: string, view: string) => [...loadVectors(db, set, [hash], view).get(hash)!];
    for (const order of [['32x32', '48x64'], ['48x64', '32x32']]) {
      const { data } = assembleInputs(cache, { sizes: order, views: ['original', 'vflip'], standardize: false });
      t.is(data.dim, 16);
      const id = (size: string) => sets.get(size)!.id;
      // Test image 1, view 1 (vflip): row 1 * 2 + 1, the first size's 8 floats then the second's.
      t.deepEqual([...data.test.x.subarray(3 * 16, 4 * 16)], [...vector(id(order[0]), 'vflip'), ...vector(id(order[1]), 'vflip')]);
    }
    // A sweep over both orders keeps them as different variants, anchored to the first size listed.
    const sweep = viewsSweep({ sizes: { values: [['48x64', '32x32'], ['32x32']] }, epochs: { value: 2 }, views: { value: ['original'] } });
    const anchor = await sweepFeatureSet(db, undefined, sweep);
    t.is(anchor.id, large.id);
    const outcome = await runSweep({ db, featureSet: anchor, sweep, resume: false, log: quiet });
    const runs = loadRuns(db, outcome.sweepId);
    t.deepEqual([...new Set(runs.map((r) => JSON.stringify(r.params.sizes)))].sort(), ['["32x32"]', '["48x64","32x32"]']);
    for (const run of runs) t.deepEqual(run.weights[0].shape, [8 * (run.params.sizes as string[]).length, 3]);
    const facts = await gatherReport(db, await chooseSweep(db, outcome.sweepId));
    t.deepEqual(facts.extraction.size_feature_sets, [
      { size: '48x64', feature_set: large.id },
      { size: '32x32', feature_set: small.id },
    ]);
    t.truthy(getFeatureSet(db, facts.extraction.feature_set));
  } finally {
    db.close();
  }
});

test('a view or size the cache lacks is one line naming the sweep field and the extract command', async (t) => {
  const { db, featureSets } = makeViewsCache(join(tempDir(t), 'c.sqlite'), { kind: 'help', views: ['original', 'hflip'], perClass: 10, dim: 8 });
  try {
    const [set] = featureSets;
    const views = viewsSweep({ views: { values: [['original'], ['original', 'vflip']] } });
    const error = await t.throwsAsync(runSweep({ db, featureSet: set, sweep: views, resume: false, log: quiet }));
    t.is(
      error!.message,
      `sweep.parameters.views: feature set ${set.id} (32x32) has no vectors of view vflip for 30 of 30 images (e.g. a/a0.jpg): run \`pipeline extract --size 32x32 --views original,vflip\``,
    );
    const sizes = viewsSweep({ sizes: { value: ['32x32', '224x224'] }, views: { value: ['original', 'hflip'] } });
    const missing = await t.throwsAsync(runSweep({ db, featureSet: set, sweep: sizes, resume: false, log: quiet }));
    t.is(missing!.message, 'sweep.parameters.sizes: the cache has no features at size 224x224 (cached: 32x32): run `pipeline extract --size 224x224 --views original,hflip`');
    await t.throwsAsync(sweepFeatureSet(db, undefined, viewsSweep({ sizes: { value: ['64x64'] } })), { message: /sweep\.parameters\.sizes: the cache has no features at size 64x64/ });
  } finally {
    db.close();
  }
});

test('views and sizes in the sweep config: canonical names, one line per mistake', (t) => {
  const parsed = SweepSchema.parse({ parameters: { views: { values: [['original', 'crop:0.80:tl']] }, sizes: { value: ['0448x597'] } } });
  t.deepEqual(parsed.parameters.views, { values: [['original', 'crop:0.8:tl']] });
  t.deepEqual(parsed.parameters.sizes, { value: ['448x597'] });
  t.deepEqual(parsed.parameters.standardize, { value: false });
  const file = join(tempDir(t), 'sweep.yaml');
  for (const [parameters, message] of [
    ['views: {value: [original, flip]}', /:3:\d+: sweep\.parameters\.views\.value: unknown view "flip"/],
    ['views: {values: [[original], [hflip, hflip]]}', /:3:\d+: sweep\.parameters\.views.*view "hflip" listed twice/],
    ['sizes: {value: [448x597, 448x597]}', /:3:\d+: sweep\.parameters\.sizes.*size 448x597 listed twice/],
    ['sizes: {value: [big]}', /:3:\d+: sweep\.parameters\.sizes.*size "big": expected HxW/],
    ['sizes: {value: []}', /:3:\d+: sweep\.parameters\.sizes.*at least one size/],
    ['standardize: {values: [true, yes]}', /:3:\d+: sweep\.parameters\.standardize/],
  ] as const) {
    writeFileSync(file, `sweep:\n  parameters:\n    ${parameters}\n`);
    const error = t.throws(() => loadConfig(file), undefined, parameters);
    t.regex(error!.message, message, parameters);
    t.false(error!.message.includes('\n'), 'one line');
  }
});

test('a sweep is pinned to the feature set of every size and the views it read', async (t) => {
  const sizes = [{ height: 32, width: 32 }, { height: 48, width: 64 }];
  const { db, featureSets } = makeViewsCache(join(tempDir(t), 'c.sqlite'), { kind: 'help', sizes, perClass: 10, dim: 8 });
  try {
    const [small, large] = featureSets;
    const sweep = viewsSweep({ sizes: { value: ['32x32', '48x64'] }, views: { value: ['original', 'hflip'] }, epochs: { value: 2 } });
    const first = await runSweep({ db, featureSet: small, sweep, resume: false, log: quiet });
    const again = await runSweep({ db, featureSet: small, sweep, resume: false, log: quiet });
    t.true(again.alreadyDone);
    t.is(again.sweepId, first.sweepId);
    const row = getSweep(db, first.sweepId)!;
    t.deepEqual(row.sizeSets, { '32x32': small.id, '48x64': large.id });
    // The data hash names the inputs, not only the anchor's members.
    const members = loadSweepMembers(db, first.sweepId);
    t.not(row.dataHash, membersHash(small.id, members));
    t.is(row.dataHash, membersHash(JSON.stringify({ anchor: small.id, sizes: [['32x32', small.id], ['48x64', large.id]], views: ['original', 'hflip'] }), members));
  } finally {
    db.close();
  }
});
