/**
 * The real thing with views and two sizes: the CLI over a TrashNet slice with the real
 * MobileNetV2 1.0 from ../shared, one extra view and a second size, then `cache`,
 * `export-features --view`, and a sweep over views, sizes and standardisation with its report.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expectOneLineError, runPipeline, trashnetSlice } from './helpers/cli.js';
import { SHARED_MODEL_100, fileTempDir, testWithShared } from './helpers/shared.js';

const temp = fileTempDir('pipeline-smoke-views-');

testWithShared('real model: extract --views original,hflip --size 384x512,224x224, cache lists both views, export-features --view hflip, sweep over views and sizes', async (t) => {
  try {
    await trashnetSlice(join(temp.dir, 'data'), 5);
    const common = ['--db', 'c.sqlite'];
    const r = await runPipeline(temp.dir, ['extract', '--data', 'data', '--model', SHARED_MODEL_100, '--backend', 'onnx', '--views', 'original,hflip', '--size', '384x512,224x224', ...common]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /30 images, 0 already cached, 120 extracted/);
    t.is(r.stdout.match(/^feature set [0-9a-f]{16} in \S*c\.sqlite \((384x512|224x224), views original, hflip\)/gm)?.length, 2);
    const cache = await runPipeline(temp.dir, ['cache', ...common]);
    t.is(cache.code, 0, cache.stderr);
    t.is(cache.stdout.match(/views original \(30\), hflip \(30\)/g)?.length, 2);
    const id = /^feature set ([0-9a-f]{16}) in \S*c\.sqlite \(224x224/m.exec(r.stdout)![1];
    const out = await runPipeline(temp.dir, ['export-features', '--feature-set', id, '--view', 'hflip', '--out', 'hflip', ...common]);
    t.is(out.code, 0, out.stderr);
    t.regex(out.stdout, /wrote 30 x 1280 features of [0-9a-f]{16} \(view hflip\)/);
    t.is((await readFile(join(temp.dir, 'hflip', 'index.csv'), 'utf8')).trim().split('\n').length, 31);
    const bad = await runPipeline(temp.dir, ['export-features', '--feature-set', id, '--view', 'vflip', '--out', 'vflip', ...common]);
    t.regex(expectOneLineError(t, bad, 'export-features --view vflip'), /has no extracted features of view vflip: run `pipeline extract --views vflip`/);

    // A sweep choosing between one and two sizes and one and two views, z-scored, anchored to 384x512.
    await writeFile(
      join(temp.dir, 'sweep.yaml'),
      `sweep:
  seeds: [1]
  parameters:
    sizes: {values: [[384x512], [384x512, 224x224]]}
    views: {values: [[original], [original, hflip]]}
    standardize: {value: true}
    dropout: {value: 0}
    learning_rate: {value: 0.001}
    epochs: {value: 5}
`,
    );
    const sweep = await runPipeline(temp.dir, ['sweep', '--config', 'sweep.yaml', ...common]);
    t.is(sweep.code, 0, sweep.stderr);
    t.regex(sweep.stderr + sweep.stdout, /4 runs \(4 variants x 1 seeds\), 0 already done, 4 to train in 4 input groups .*split 23\/3\/4 \(official split lists\)/);
    t.regex(sweep.stdout, /s wall now/);
    const report = await runPipeline(temp.dir, ['report', '--json', ...common]);
    t.is(report.code, 0, report.stderr);
    const facts = JSON.parse(report.stdout) as {
      extraction: { feature_set: string; size_feature_sets: { size: string; feature_set: string }[] };
      best: { inputs: { sizes: string[]; views: string[]; standardize: boolean }; test_accuracy_single_view: number };
      runs: { params: { sizes: string[]; views: string[]; standardize: boolean }; test_accuracy_single_view: number }[];
    };
    t.deepEqual(facts.extraction.size_feature_sets.map((s) => s.size).sort(), ['224x224', '384x512']);
    t.is(facts.extraction.size_feature_sets.find((s) => s.size === '384x512')?.feature_set, facts.extraction.feature_set);
    t.deepEqual(facts.runs.map((run) => `${run.params.sizes.join('+')} ${run.params.views.join('+')}`).sort(), [
      '384x512 original',
      '384x512 original+hflip',
      '384x512+224x224 original',
      '384x512+224x224 original+hflip',
    ]);
    for (const run of facts.runs) {
      t.true(run.params.standardize);
      t.true(run.test_accuracy_single_view >= 0 && run.test_accuracy_single_view <= 1);
    }
    t.true(facts.best.inputs.standardize);
    const text = await runPipeline(temp.dir, ['report', ...common]);
    t.regex(text.stdout, /inputs: sizes? 384x512/);
  } finally {
    await temp.remove();
  }
});
