/**
 * `pipeline extract --data manifest.csv` through the binary, with the images served by a
 * local HTTP server that misbehaves for some of them (a slow but complete answer, a
 * stalled one, a 404, a cut response, an HTML page, bytes that are no image). Each bad URL
 * is a failure of its own image; every other image gets the very vector the same file gets
 * from a dataset folder, keyed by its content; a rerun fetches only what failed. On
 * PostgreSQL, two workers sharing the manifest's shards store the same features.
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { openDatabase } from '../cache/database.js';
import { listFeatureSets, listItems, loadVectors } from '../cache/features.js';
import { runPipeline, type CliResult } from './helpers/cli.js';
import { EXTRACT_FLAGS } from './helpers/fault-fixtures.js';
import { type FaultServer, type Route, faultServer } from './helpers/http-server.js';
import { makeDataset } from './helpers/images.js';
import { freshDatabase, postgresSuite } from './helpers/postgres.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const pg = postgresSuite();
const temp = fileTempDir('pipeline-extract-manifest-');
let server: FaultServer | undefined;
test.after.always(async () => {
  await server?.close();
  await temp.remove();
});

/** Bad URLs and the reason each must fail with; all but the last fail to be fetched at all. */
const FAULTS: Record<string, { route?: Route; reason: RegExp }> = {
  // 40 KiB at 1 KiB per 100 ms: 4 s, beyond the 2 s timeout, on every attempt.
  '/stalled.jpg': { route: { body: Buffer.alloc(40 * 1024, 7), type: 'image/jpeg', trickleMs: 100 }, reason: /^no complete answer within 2000 ms \(2 attempts\)$/ },
  '/missing.jpg': { reason: /^HTTP 404 Not Found$/ },
  '/cut.jpg': { route: { body: Buffer.alloc(4000, 9), type: 'image/jpeg', cutAfter: 300 }, reason: /^connection closed after 300 of 4000 bytes \(2 attempts\)$|other side closed.*\(2 attempts\)$/ },
  '/page.jpg': { route: { body: Buffer.from('<html>hotlinking forbidden</html>'), type: 'text/html; charset=utf-8' }, reason: /^not an image: the server sent text\/html$/ },
  '/garbage.jpg': { route: { body: Buffer.from('this is not a JPEG at all'), type: 'image/jpeg' }, reason: /unsupported image format/ },
};

interface Fixture {
  readonly cwd: string;
  readonly server: FaultServer;
  readonly extract: (db: string, ...more: string[]) => string[];
  /** Good images named by the manifest: by URL and by local path. */
  readonly good: number;
  readonly goodUrls: readonly string[];
}

let fixture: Promise<Fixture> | undefined;
const setUp = () =>
  (fixture ??= (async () => {
    const cwd = temp.dir;
    const data = await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c'], perClass: 5, width: 48, height: 40, seed: 5200 });
    const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 91 });
    const routes: Record<string, Route> = {};
    for (const [path, fault] of Object.entries(FAULTS)) if (fault.route) routes[path] = fault.route;
    // Every image but the first of each class is served over HTTP; the first of class b
    // trickles in 1 KiB pieces (slow, within the timeout), the first of class c is cut
    // short on its first request and whole afterwards (a retry gets it).
    const remote = data.images.filter((rel) => !rel.endsWith('_0.jpg'));
    for (const rel of remote) routes[`/${rel}`] = { body: await readFile(join(data.root, rel)), type: 'image/jpeg' };
    routes['/b/b_1.jpg'] = { ...routes['/b/b_1.jpg'], trickleMs: 400 };
    const cut = routes['/c/c_1.jpg'];
    routes['/c/c_1.jpg'] = { ...cut, cutAfter: 300 };
    server = await faultServer(routes);
    const served = server;
    const recover = setInterval(() => {
      if ((served.hits.get('/c/c_1.jpg') ?? 0) > 0) {
        served.routes['/c/c_1.jpg'] = cut;
        clearInterval(recover);
      }
    }, 5);
    const lines = [
      'url_or_path,label',
      ...data.images.filter((rel) => rel.endsWith('_0.jpg')).map((rel) => `data/${rel},${rel[0]}`),
      ...remote.map((rel) => `${served.url(`/${rel}`)},${rel[0]}`),
      ...Object.keys(FAULTS).map((path, i) => `${served.url(path)},${'abc'[i % 3]}`),
    ];
    await writeFile(join(cwd, 'manifest.csv'), `${lines.join('\n')}\n`);
    const extract = (db: string, ...more: string[]) =>
      ['extract', '--data', ...more.includes('--data') ? [] : ['manifest.csv'], ...EXTRACT_FLAGS(modelJson), '--fetch-timeout', '2', '--fetch-retries', '1', '--db', db, ...more];
    const folder = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', 'folder.sqlite']);
    if (folder.code !== 0) throw new Error(`folder extract failed: ${folder.stderr}`);
    return { cwd, server: served, extract, good: data.images.length, goodUrls: remote.map((rel) => `/${rel}`) };
  })());

const ok = (t: { is: (a: unknown, b: unknown, m?: string) => void }, r: CliResult, what: string) =>
  t.is(r.code, 0, `${what} exited ${r.code} (${r.signal ?? 'no signal'}):\n${r.stderr}`);

/** The stored vectors of the only feature set in a SQLite file, by content hash (as hex of their bytes). */
function vectorsOf(path: string): Map<string, string> {
  const db = openDatabase(path, { readonly: true });
  try {
    const [set] = listFeatureSets(db);
    const vectors = loadVectors(db, set.id, listItems(db, set.id).map((item) => item.sha256));
    return new Map([...vectors].map(([hash, v]) => [hash, Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')]));
  } finally {
    db.close();
  }
}

/** The "failed: PATH: REASON" lines of a run's output, by the URL's path. */
function failuresOf(stdout: string): Map<string, string> {
  return new Map([...stdout.matchAll(/^ {2}failed: http:\/\/127\.0\.0\.1:\d+(\/\S+): (.*)$/gm)].map((m) => [m[1], m[2]]));
}

test.serial('a URL manifest: each bad URL fails alone, every other image gets the vector its file gets from a folder; a rerun fetches only failures', async (t) => {
  const { cwd, server, extract, good, goodUrls } = await setUp();
  const run = await runPipeline(cwd, [...extract('manifest.sqlite'), '--concurrency', '3']);
  ok(t, run, 'extract --data manifest.csv');
  t.log(run.stdout.trim());
  const total = good + Object.keys(FAULTS).length;
  t.regex(run.stdout, new RegExp(`^done: ${total} images, 0 already cached, ${good} extracted in .*, ${Object.keys(FAULTS).length} failed$`, 'm'));
  const failures = failuresOf(run.stdout);
  t.deepEqual([...failures.keys()].sort(), Object.keys(FAULTS).sort());
  for (const [path, { reason }] of Object.entries(FAULTS)) t.regex(failures.get(path) ?? '', reason, path);
  const unfetched = Object.keys(FAULTS).length - 1;
  t.regex(run.stderr, new RegExp(`^fetched ${goodUrls.length + Object.keys(FAULTS).length} URLs to hash them \\(${unfetched} failed\\), 0 known from earlier runs or workers$`, 'm'));
  // The cut answer was retried and then served whole; the slow one came in time.
  t.true(server.hits.get('/c/c_1.jpg')! >= 2);

  // Same content, same vector, bit for bit: the URL's bytes are the file's bytes.
  const fromFolder = vectorsOf(join(cwd, 'folder.sqlite'));
  const fromManifest = vectorsOf(join(cwd, 'manifest.sqlite'));
  t.is(fromManifest.size, good);
  for (const [hash, vector] of fromManifest) t.true(vector === fromFolder.get(hash), `vector of ${hash}`);

  // The listing names each image as the manifest does, with its label.
  const index = (await runPipeline(cwd, ['export-features', '--db', 'manifest.sqlite', '--out', 'exported'])).code;
  t.is(index, 0);
  const csv = await readFile(join(cwd, 'exported', 'index.csv'), 'utf8');
  t.regex(csv, /^data\/a\/a_0\.jpg,/m);
  t.regex(csv, /^http:\/\/127\.0\.0\.1:\d+\/b\/b_1\.jpg,/m);

  // A rerun: the good URLs are known (not fetched again), the failed ones are tried again.
  const before = new Map(server.hits);
  const again = await runPipeline(cwd, extract('manifest.sqlite'));
  ok(t, again, 'rerun');
  t.regex(again.stdout, new RegExp(`^done: ${total} images, ${good} already cached, 0 extracted .*, ${Object.keys(FAULTS).length} failed$`, 'm'));
  for (const url of goodUrls) t.is(server.hits.get(url), before.get(url), `${url} fetched again`);
  for (const path of Object.keys(FAULTS)) t.true(server.hits.get(path)! > before.get(path)!, `${path} not tried again`);
  t.regex(again.stderr, new RegExp(`^fetched ${Object.keys(FAULTS).length} URLs to hash them \\(${unfetched} failed\\), ${goodUrls.length} known from earlier runs or workers$`, 'm'));

  // Content hashes key the cache: a store holding the folder's vectors has all of them.
  await copyFile(join(cwd, 'folder.sqlite'), join(cwd, 'shared.sqlite'));
  const shared = await runPipeline(cwd, extract('shared.sqlite'));
  ok(t, shared, 'extract into the folder run\'s store');
  t.regex(shared.stdout, new RegExp(`^done: ${total} images, ${good} already cached, 0 extracted .*, ${Object.keys(FAULTS).length} failed$`, 'm'));
  t.deepEqual(vectorsOf(join(cwd, 'shared.sqlite')), fromFolder);
});

test('a manifest with a bad line, or with --splits: one line naming file and line, or the flag, exit 1', async (t) => {
  const { cwd, extract } = await setUp();
  await writeFile(join(cwd, 'bad.csv'), 'url_or_path,label,split\ndata/a/a_0.jpg,a,train\ndata/a/a_1.jpg,a,\n');
  const partial = await runPipeline(cwd, extract('bad.sqlite', '--data', 'bad.csv'));
  t.is(partial.code, 1);
  t.is(partial.stderr, `pipeline: ${join(cwd, 'bad.csv')}:3: split: empty, but other lines give one (fill it on every line or on none)\n`);
  await writeFile(join(cwd, 'twice.jsonl'), '{"url_or_path": "data/a/a_0.jpg", "label": "a"}\n{"url_or_path": "data/a/a_0.jpg", "label": "b"}\n');
  const twice = await runPipeline(cwd, extract('bad.sqlite', '--data', 'twice.jsonl'));
  t.is(twice.code, 1);
  t.is(twice.stderr, `pipeline: ${join(cwd, 'twice.jsonl')}:2: url_or_path: data/a/a_0.jpg is listed already on line 1\n`);
  const splits = await runPipeline(cwd, extract('bad.sqlite', '--splits', 'data'));
  t.is(splits.code, 1);
  t.regex(splits.stderr, /^pipeline: --splits \/ dataset\.splits: a manifest \(.*manifest\.csv\) gives its splits in its own split column\n$/);
  const missing = await runPipeline(cwd, extract('bad.sqlite', '--data', 'nowhere.csv'));
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^pipeline: --data \S*\/nowhere\.csv: no such file\n$/);
});

pg.serial('two workers share a URL manifest\'s shards on PostgreSQL: the same features as the SQLite run', async (t, cluster) => {
  const { cwd, extract, good } = await setUp();
  ok(t, await runPipeline(cwd, extract('pg-reference.sqlite')), 'SQLite reference extract');
  ok(t, await runPipeline(cwd, ['export-features', '--db', 'pg-reference.sqlite', '--out', 'sqlite-features']), 'export-features of the SQLite run');
  const url = freshDatabase(cluster, 'manifest');
  const workers = await Promise.all([1, 2].map(() => runPipeline(cwd, extract(url, '--shard-size', '4'))));
  for (const [i, w] of workers.entries()) ok(t, w, `worker ${i + 1}`);
  // They hash one after another: the second fetches only what the first could not.
  const fetched = workers.map((w) => /^fetched (\d+) URLs to hash them \((\d+) failed\)/m.exec(w.stderr)!.slice(1).join('/')).sort();
  const urls = Object.keys(FAULTS).length + good - 3;
  t.deepEqual(fetched, [`${urls}/${Object.keys(FAULTS).length - 1}`, `${Object.keys(FAULTS).length - 1}/${Object.keys(FAULTS).length - 1}`].sort());
  t.log(workers.map((w) => w.stdout.trim()).join('\n---\n'));
  ok(t, await runPipeline(cwd, ['export-features', '--db', url, '--out', 'pg-features']), 'export-features');
  for (const file of ['features.npy', 'index.csv']) {
    t.true((await readFile(join(cwd, 'pg-features', file))).equals(await readFile(join(cwd, 'sqlite-features', file))), `${file} differs from the SQLite run's`);
  }
  const cache = await runPipeline(cwd, ['cache', '--db', url]);
  ok(t, cache, 'cache');
  t.regex(cache.stdout, new RegExp(`${good} vectors for ${good + Object.keys(FAULTS).length} images, ${Object.keys(FAULTS).length} failures`));
});
