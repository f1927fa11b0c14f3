/**
 * An exported model is a plain TF.js layers model: a real browser (headless Chromium)
 * loads it over HTTP with tfjs' own bundle and predicts what Node predicts.
 */
import { readFile, readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { activateBackend } from '../backbone/backends.js';
import { exportModel } from '../stages/export.js';
import { launchChromium, testWithChromium } from './helpers/browser.js';
import { makeExportFixture, loadTfjsExport } from './helpers/export-fixture.js';
import { type Route, faultServer } from './helpers/http-server.js';
import { tempDir } from './helpers/shared.js';

const TFJS_BUNDLE = createRequire(import.meta.url).resolve('@tensorflow/tfjs/dist/tf.min.js');

/** Pixels 0..255 that vary over the image, the same in Node and in the page. */
const pattern = (height: number, width: number) =>
  Array.from({ length: height * width * 3 }, (_, i) => (i * 37) % 256);

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
