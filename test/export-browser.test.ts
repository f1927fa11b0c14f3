/**
 * An exported model is a plain TF.js layers model: a real browser (headless Chromium)
 * loads it over HTTP with tfjs' own bundle and predicts what Node predicts, also with
 * several sizes and views averaged by the README's recipe.
 */
import { readFile, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { ExecutionContext } from 'ava';
import { activateBackend } from '../backbone/backends.js';
import { exportModel } from '../stages/export.js';
import { launchChromium, testWithChromium } from './helpers/browser.js';
import { addViewsRun, makeExportFixture, loadTfjsExport } from './helpers/export-fixture.js';
import { type Route, faultServer } from './helpers/http-server.js';
import { tempDir } from './helpers/shared.js';

const TFJS_BUNDLE = createRequire(import.meta.url).resolve('@tensorflow/tfjs/dist/tf.min.js');

/** Pixels 0..255 that vary over the image, the same in Node and in the page. */
const pattern = (height: number, width: number) =>
  Array.from({ length: height * width * 3 }, (_, i) => (i * 37) % 256);

/**
 * Serves tfjs' bundle and the export folder `out` (under /model/) on 127.0.0.1 and opens
 * a page that has loaded the bundle; `errors` collects the page's uncaught errors.
 */
async function openExportInBrowser(t: ExecutionContext, out: string) {
  const routes: Record<string, Route> = {
    '/tf.min.js': { type: 'text/javascript', body: await readFile(TFJS_BUNDLE) },
    '/index.html': { type: 'text/html', body: Buffer.from('<!doctype html><script src="/tf.min.js"></script>') },
  };
  for (const file of await readdir(out)) routes[`/model/${file}`] = { type: 'application/octet-stream', body: await readFile(join(out, file)) };
  const server = await faultServer(routes);
  t.teardown(() => server.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(server.url('/index.html'));
  return { server, page, errors };
}

testWithChromium('an exported model loads with tf.loadLayersModel in Chromium and predicts as in Node', async (t) => {
  await activateBackend(tf, 'wasm');
  const dir = tempDir(t);
  const fixture = await makeExportFixture(join(dir, 'fixture'));
  const out = join(dir, 'model');
  await exportModel({ db: fixture.db, run: 'best', out, log: () => {} });
  fixture.db.close();
  const { height, width } = fixture.size;

  const loaded = await loadTfjsExport(out);
  const input = tf.tensor4d(pattern(height, width), [1, height, width, 3]);
  const output = loaded.model.predict(input) as tf.Tensor;
  const inNode = Array.from(await output.data());
  tf.dispose([input, output]);
  loaded.model.dispose();

  const { server, page, errors } = await openExportInBrowser(t, out);
  const inBrowser = await page.evaluate(
    async ({ url, height, width, values }) => {
      const tfjs = (globalThis as unknown as { tf: typeof tf }).tf;
      const model = await tfjs.loadLayersModel(url);
      const prediction = model.predict(tfjs.tensor4d(values, [1, height, width, 3])) as tf.Tensor;
      return { backend: tfjs.getBackend(), probabilities: Array.from(await prediction.data()) };
    },
    { url: server.url('/model/model.json'), height, width, values: pattern(height, width) },
  );
  t.deepEqual(errors, []);
  t.log(`browser backend: ${inBrowser.backend}; Node: wasm`);
  t.is(inBrowser.probabilities.length, inNode.length);
  inBrowser.probabilities.forEach((p, i) => t.true(Math.abs(p - inNode[i]) < 1e-4, `class ${i}: browser ${p}, node ${inNode[i]}`));
});

/**
 * The README's recipe for a TF.js export with several views and sizes, as one function with
 * no outside references so the page can run its source: every view of the decoded image
 * (tensor [H, W, 3]) at every size, one row per view, mean of the rows' probabilities.
 */
async function classifyWithViews(
  tfjs: typeof tf,
  model: tf.LayersModel,
  metadata: { sizes: string[]; views: string[] },
  image: tf.Tensor3D,
): Promise<number[]> {
  const probabilities = tfjs.tidy(() => {
    const views = metadata.views.map((view) => {
      if (view === 'original') return image;
      if (view === 'hflip') return tfjs.reverse(image, 1);
      if (view === 'vflip') return tfjs.reverse(image, 0);
      if (view === 'rot180') return tfjs.reverse(image, [0, 1]);
      if (view === 'rot90') return tfjs.reverse(tfjs.transpose(image, [1, 0, 2]), 1);
      if (view === 'rot270') return tfjs.reverse(tfjs.transpose(image, [1, 0, 2]), 0);
      throw new Error(`view ${view}: make it from the decoded pixels as data/views.ts does`);
    });
    const inputs = metadata.sizes.map((size) => {
      const [height, width] = size.split('x').map(Number);
      return tfjs.stack(views.map((v) => tfjs.image.resizeBilinear(v as tf.Tensor3D, [height, width], false, true)));
    });
    const rows = model.predict(inputs.length > 1 ? inputs : inputs[0]) as tf.Tensor2D;
    return rows.mean(0);
  });
  const values = Array.from(await probabilities.data());
  probabilities.dispose();
  return values;
}

testWithChromium('a 2-size, 3-view, standardized export runs in Chromium with the README recipe (views averaged) as in Node', async (t) => {
  await activateBackend(tf, 'wasm');
  const dir = tempDir(t);
  const fixture = await makeExportFixture(join(dir, 'fixture'));
  const run = addViewsRun(fixture, ['64x64', '48x40'], ['original', 'hflip', 'rot90']);
  const out = join(dir, 'model');
  const { metadata } = await exportModel({ db: fixture.db, run: run.runKey, out, log: () => {} });
  fixture.db.close();
  t.deepEqual(metadata.sizes, ['64x64', '48x40']);
  t.deepEqual(metadata.views, ['original', 'hflip', 'rot90']);
  const [height, width] = [30, 50];

  const loaded = await loadTfjsExport(out);
  const image = tf.tensor3d(pattern(height, width), [height, width, 3]);
  const inNode = await classifyWithViews(tf, loaded.model, metadata, image);
  const perView = await Promise.all(
    metadata.views.map((view) => classifyWithViews(tf, loaded.model, { sizes: metadata.sizes, views: [view] }, image)),
  );
  image.dispose();
  loaded.model.dispose();
  // The views are not interchangeable: averaging them is not any single one.
  t.true(perView.every((p) => Math.max(...p.map((v, i) => Math.abs(v - inNode[i]))) > 1e-3));

  const { server, page, errors } = await openExportInBrowser(t, out);
  const inBrowser = await page.evaluate(
    async ({ base, source, height, width, values }) => {
      const tfjs = (globalThis as unknown as { tf: typeof tf }).tf;
      const model = await tfjs.loadLayersModel(`${base}/model.json`);
      const meta = (await (await fetch(`${base}/metadata.json`)).json()) as { sizes: string[]; views: string[] };
      const classify = new Function(`return ${source}`)() as typeof classifyWithViews;
      return classify(tfjs, model, meta, tfjs.tensor3d(values, [height, width, 3]));
    },
    { base: server.url('/model'), source: classifyWithViews.toString(), height, width, values: pattern(height, width) },
  );
  t.deepEqual(errors, []);
  t.is(inBrowser.length, inNode.length);
  inBrowser.forEach((p, i) => t.true(Math.abs(p - inNode[i]) < 1e-4, `class ${i}: browser ${p}, node ${inNode[i]}`));
});
