/**
 * Downloads against a real HTTP server on 127.0.0.1 (ephemeral port): model folders into
 * PIPELINE_CACHE_DIR, and dataset zips through ensureDataset.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { readWeightFile } from '../backbone/weights.js';
import { scanDataset } from '../data/dataset.js';
import { ensureDataset } from '../data/fetch-dataset.js';
import { sha256 } from '../data/hash.js';
import { UserError } from '../core/errors.js';
import { type FaultServer, type Route, faultServer } from './helpers/http-server.js';
import { makeDataset } from './helpers/images.js';
import { zipOf } from './helpers/zip.js';
import { writeRandomModel } from './helpers/random-model.js';
import { SHARED_MODEL_100, SHARED_PRESENT, fileTempDir, tempDir } from './helpers/shared.js';

/** A one-test HTTP server on 127.0.0.1, closed at teardown. */
async function serve(t: ExecutionContext, routes: Record<string, Route>): Promise<FaultServer> {
  const server = await faultServer(routes);
  t.teardown(() => server.close());
  return server;
}

const cache = fileTempDir('pipeline-download-cache-');
test.before(() => {
  process.env.PIPELINE_CACHE_DIR = cache.dir;
});
test.after.always(() => cache.remove());

/** The model to serve: the real multi-shard alpha 1.0 model when ../shared exists, else a random one. */
async function modelFolder(t: ExecutionContext): Promise<string> {
  if (SHARED_PRESENT) return dirname(SHARED_MODEL_100);
  t.log('../shared not found: serving a random alpha-0.35 model instead of the real one');
  const { modelJson } = await writeRandomModel(join(tempDir(t), 'model'), { alpha: 0.35, seed: 31 });
  return dirname(modelJson);
}

async function modelRoutes(folder: string): Promise<{ routes: Record<string, Route>; shards: string[] }> {
  const json = JSON.parse(await readFile(join(folder, 'model.json'), 'utf8')) as { weightsManifest: { paths: string[] }[] };
  const shards = json.weightsManifest.flatMap((g) => g.paths);
  const routes: Record<string, Route> = {
    '/models/mnv2/model.json': { type: 'application/json', body: await readFile(join(folder, 'model.json')) },
  };
  for (const shard of shards) routes[`/models/mnv2/${shard}`] = { body: await readFile(join(folder, shard)) };
  return { routes, shards };
}

const sum = (hits: Map<string, number>) => [...hits.values()].reduce((a, b) => a + b, 0);

test.serial('readWeightFile(url): downloads into PIPELINE_CACHE_DIR, reuses it, re-downloads a corrupted shard', async (t) => {
  const folder = await modelFolder(t);
  const { routes, shards } = await modelRoutes(folder);
  const server = await serve(t, routes);
  const url = server.url('/models/mnv2/model.json');
  const local = await readWeightFile(join(folder, 'model.json'));

  const first = await readWeightFile(url);
  t.is(first.source, url);
  t.is(first.sha256, local.sha256, 'same weights as the local file');
  t.is(server.hits.get('/models/mnv2/model.json'), 1);
  for (const shard of shards) t.is(server.hits.get(`/models/mnv2/${shard}`), 1, shard);
  const cached = (await readdir(cache.dir)).map((d) => join(cache.dir, d));
  t.is(cached.length, 1, 'one folder per URL');
  const files = await readdir(cached[0]);
  t.deepEqual(files.sort(), ['download.json', 'model.json', ...shards].sort());
  t.false(files.some((f) => f.includes('partial')));

  const hitsBefore = sum(server.hits);
  const second = await readWeightFile(url);
  t.is(second.sha256, local.sha256);
  t.is(sum(server.hits), hitsBefore, 'the second call is served from the cache');

  const victim = join(cached[0], shards[shards.length - 1]);
  const bytes = await readFile(victim);
  bytes[bytes.length >> 1] ^= 0xff;
  await writeFile(victim, bytes);
  const third = await readWeightFile(url);
  t.is(third.sha256, local.sha256, 'the corrupted shard was replaced');
  t.true(sum(server.hits) > hitsBefore, 'the server was asked again');
  t.deepEqual(await readFile(victim), await readFile(join(folder, shards[shards.length - 1])));
});

test.serial('a model URL answering 404, an HTML page, or a missing shard: one-line UserError', async (t) => {
  const folder = await modelFolder(t);
  const { routes } = await modelRoutes(folder);
  const html = Buffer.from('<!doctype html>\n<html><head><title>Sign in</title></head>\n<body>log in first</body></html>\n');
  const noShard: Route = {
    type: 'application/json',
    body: Buffer.from(JSON.stringify({ weightsManifest: [{ paths: ['gone.bin'], weights: [{ name: 'Conv1/kernel', shape: [3, 3, 3, 16], dtype: 'float32' }] }] })),
  };
  const server = await serve(t, { ...routes, '/login/model.json': { type: 'text/html', body: html }, '/noshard/model.json': noShard });

  const missing = await t.throwsAsync(() => readWeightFile(server.url('/nothing/model.json')), { instanceOf: UserError });
  t.false(missing!.message.includes('\n'), missing!.message);
  t.regex(missing!.message, /404/);
  t.true(missing!.message.includes(server.url('/nothing/model.json')), missing!.message);

  const page = await t.throwsAsync(() => readWeightFile(server.url('/login/model.json')), { instanceOf: UserError });
  t.false(page!.message.includes('\n'), page!.message);
  t.regex(page!.message, /HTML/);

  const shard = await t.throwsAsync(() => readWeightFile(server.url('/noshard/model.json')), { instanceOf: UserError });
  t.false(shard!.message.includes('\n'), shard!.message);
  t.regex(shard!.message, /gone\.bin/);
});

test.serial('a model shard cut mid-body: UserError, and nothing half-written is reused later', async (t) => {
  const folder = await modelFolder(t);
  const { routes, shards } = await modelRoutes(folder);
  const shardPath = `/cut/${shards[0]}`;
  const body = routes[`/models/mnv2/${shards[0]}`].body;
  const cutRoutes: Record<string, Route> = { '/cut/model.json': routes['/models/mnv2/model.json'] };
  for (const s of shards) cutRoutes[`/cut/${s}`] = routes[`/models/mnv2/${s}`];
  cutRoutes[shardPath] = { body, cutAfter: body.length >> 1 };
  const server = await serve(t, cutRoutes);
  const url = server.url('/cut/model.json');
  const error = await t.throwsAsync(() => readWeightFile(url), { instanceOf: UserError });
  t.false(error!.message.includes('\n'), error!.message);
  const folderOf = join(cache.dir, sha256(url).slice(0, 16));
  t.false(existsSync(join(folderOf, shards[0])), 'no shard file where a complete one is expected');
  t.false((await readdir(folderOf)).some((f) => f.includes('partial')));
  // Fixed server: the next call downloads everything properly.
  cutRoutes[shardPath] = { body };
  const local = await readWeightFile(join(folder, 'model.json'));
  t.is((await readWeightFile(url)).sha256, local.sha256);
});

test.serial('a model.json whose shard path climbs out of the cache folder is refused and writes nothing outside it', async (t) => {
  const dir = tempDir(t);
  const cacheDir = join(dir, 'a', 'b', 'cache');
  const previous = process.env.PIPELINE_CACHE_DIR;
  process.env.PIPELINE_CACHE_DIR = cacheDir;
  t.teardown(() => {
    process.env.PIPELINE_CACHE_DIR = previous;
  });
  const evil = {
    weightsManifest: [{ paths: ['../../escaped.bin'], weights: [{ name: 'Conv1/kernel', shape: [1], dtype: 'float32' }] }],
  };
  const server = await serve(t, {
    '/m/model.json': { type: 'application/json', body: Buffer.from(JSON.stringify(evil)) },
    '/escaped.bin': { body: Buffer.alloc(4) },
  });
  // join(<cache>/<hash>, '../../escaped.bin') would be <dir>/a/b/escaped.bin.
  await t.throwsAsync(() => readWeightFile(server.url('/m/model.json')), { instanceOf: UserError });
  t.false(existsSync(join(dir, 'a', 'b', 'escaped.bin')), 'a shard was written outside the model cache');
});

/** A zip of a small generated dataset, with one top-level folder as TrashNet's has. */
async function datasetZip(t: ExecutionContext): Promise<Buffer> {
  const dir = tempDir(t);
  const dataset = await makeDataset(join(dir, 'dataset-resized'), { classes: ['glass', 'metal'], perClass: 2 });
  const files = await Promise.all(
    dataset.images.map(async (image) => ({ name: `dataset-resized/${image}`, data: await readFile(join(dataset.root, image)) })),
  );
  return zipOf(files);
}

test('ensureDataset: a served zip is downloaded, checked and unpacked into place; a second call does nothing', async (t) => {
  const zip = await datasetZip(t);
  const server = await serve(t, { '/trashnet.zip': { type: 'application/zip', body: zip } });
  const root = join(tempDir(t), 'data', 'trashnet');
  const lines: string[] = [];
  await ensureDataset({ root, url: server.url('/trashnet.zip'), sha256: sha256(zip).toUpperCase() }, (l) => lines.push(l));
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['glass', 'metal']);
  t.is(dataset.items.length, 4);
  t.deepEqual(await readFile(`${root}.zip`), zip);
  t.deepEqual((await readdir(dirname(root))).sort(), ['trashnet', 'trashnet.zip']);
  t.true(lines.some((l) => l.includes('verified')));
  await ensureDataset({ root, url: server.url('/trashnet.zip'), sha256: sha256(zip) }, () => {});
  t.is(server.hits.get('/trashnet.zip'), 1);
});

test('ensureDataset: a sha256 mismatch is refused and leaves nothing at the root path', async (t) => {
  const zip = await datasetZip(t);
  const server = await serve(t, { '/trashnet.zip': { type: 'application/zip', body: zip } });
  const parent = join(tempDir(t), 'data');
  const root = join(parent, 'trashnet');
  const error = await t.throwsAsync(
    () => ensureDataset({ root, url: server.url('/trashnet.zip'), sha256: '0'.repeat(64) }, () => {}),
    { instanceOf: UserError },
  );
  t.regex(error!.message, /sha256/);
  t.false(existsSync(root));
  t.false(existsSync(`${root}.zip`));
  t.deepEqual(existsSync(parent) ? await readdir(parent) : [], []);
});

test('ensureDataset: a connection cut mid-body leaves no partial file', async (t) => {
  const zip = await datasetZip(t);
  const server = await serve(t, { '/trashnet.zip': { type: 'application/zip', body: zip, cutAfter: zip.length >> 1 } });
  const parent = join(tempDir(t), 'data');
  const root = join(parent, 'trashnet');
  const error = await t.throwsAsync(() => ensureDataset({ root, url: server.url('/trashnet.zip'), sha256: null }, () => {}), {
    instanceOf: UserError,
  });
  t.false(error!.message.includes('\n'), error!.message);
  t.false(existsSync(root));
  t.false(existsSync(`${root}.zip`));
  t.deepEqual(existsSync(parent) ? await readdir(parent) : [], []);
});

test('ensureDataset: a download that is not a zip (no sha256 pinned) fails, and the next run downloads again', async (t) => {
  const zip = await datasetZip(t);
  const routes: Record<string, Route> = {
    '/trashnet.zip': { type: 'text/html', body: Buffer.from('<html><body>rate limited, try later</body></html>\n') },
  };
  const server = await serve(t, routes);
  const root = join(tempDir(t), 'data', 'trashnet');
  const source = { root, url: server.url('/trashnet.zip'), sha256: null };
  const error = await t.throwsAsync(() => ensureDataset(source, () => {}), { instanceOf: UserError });
  t.false(error!.message.includes('\n'), error!.message);
  t.false(existsSync(root));
  // The server recovers; the unusable file must not be reused forever.
  routes['/trashnet.zip'] = { type: 'application/zip', body: zip };
  await ensureDataset(source, () => {});
  t.is(server.hits.get('/trashnet.zip'), 2, 'downloaded again');
  t.deepEqual((await scanDataset(root)).classes, ['glass', 'metal']);
});

test('ensureDataset: a folder that exists is left alone, and without a URL nothing is fetched', async (t) => {
  const dir = tempDir(t);
  const server = await serve(t, {});
  await mkdir(join(dir, 'there'));
  await ensureDataset({ root: join(dir, 'there'), url: server.url('/x.zip'), sha256: null }, () => {});
  await ensureDataset({ root: join(dir, 'absent'), url: null, sha256: null }, () => {});
  t.is(sum(server.hits), 0);
  t.deepEqual(await readdir(dir), ['there']);
});
