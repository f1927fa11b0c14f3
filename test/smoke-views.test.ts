/**
 * The real thing with views and two sizes: the CLI over a TrashNet slice with the real
 * MobileNetV2 1.0 from ../shared, one extra view and a second size, then `cache` and
 * `export-features --view`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expectOneLineError, runPipeline, trashnetSlice } from './helpers/cli.js';
import { SHARED_MODEL_100, fileTempDir, testWithShared } from './helpers/shared.js';

const temp = fileTempDir('pipeline-smoke-views-');

testWithShared('real model: extract --views original,hflip --size 384x512,224x224, cache lists both views, export-features --view hflip', async (t) => {
  try {
    await trashnetSlice(join(temp.dir, 'data'), 2);
    const common = ['--db', 'c.sqlite'];
    const r = await runPipeline(temp.dir, ['extract', '--data', 'data', '--model', SHARED_MODEL_100, '--backend', 'onnx', '--views', 'original,hflip', '--size', '384x512,224x224', ...common]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /12 images, 0 already cached, 48 extracted/);
    t.is(r.stdout.match(/^feature set [0-9a-f]{16} in \S*c\.sqlite \((384x512|224x224), views original, hflip\)/gm)?.length, 2);
    const cache = await runPipeline(temp.dir, ['cache', ...common]);
    t.is(cache.code, 0, cache.stderr);
    t.is(cache.stdout.match(/views original \(12\), hflip \(12\)/g)?.length, 2);
    const id = /^feature set ([0-9a-f]{16}) in \S*c\.sqlite \(224x224/m.exec(r.stdout)![1];
    const out = await runPipeline(temp.dir, ['export-features', '--feature-set', id, '--view', 'hflip', '--out', 'hflip', ...common]);
    t.is(out.code, 0, out.stderr);
    t.regex(out.stdout, /wrote 12 x 1280 features of [0-9a-f]{16} \(view hflip\)/);
    t.is((await readFile(join(temp.dir, 'hflip', 'index.csv'), 'utf8')).trim().split('\n').length, 13);
    const bad = await runPipeline(temp.dir, ['export-features', '--feature-set', id, '--view', 'vflip', '--out', 'vflip', ...common]);
    t.regex(expectOneLineError(t, bad, 'export-features --view vflip'), /has no extracted features of view vflip: run `pipeline extract --views vflip`/);
  } finally {
    await temp.remove();
  }
});
