/**
 * Fault cases 5.x (README, "Fault injection"): downloads through the real CLI from a misbehaving server on 127.0.0.1.
 * A connection cut (with or without Content-Length), wrong bytes, a SIGKILL mid-download:
 * no partial file ever sits where a complete one is expected (the model cache's
 * model.json / weights.bin / download.json, the dataset's zip and folder), the error is one
 * line with exit 1, the hash checks catch what they can, and a rerun against a healthy
 * server gives the same features as the local model.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { sha256 } from '../../data/hash.js';
import { type CliResult, errorLines, readCache, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS } from '../helpers/fault-fixtures.js';
import { zipOf } from '../helpers/zip.js';
import { type FaultServer, type Route, faultServer } from '../helpers/http-server.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const figures = new Figures('downloads');
const temp = fileTempDir('pipeline-fault-downloads-');
const cwd = temp.dir;
let modelJsonPath: string;
let modelJson: Buffer;
let weights: Buffer;
let reference: Map<string, Buffer>;
let server: FaultServer;

test.before(async () => {
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b'], perClass: 3, width: 48, height: 40, seed: 13000 });
  ({ modelJson: modelJsonPath } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 606 }));
  modelJson = readFileSync(modelJsonPath);
  weights = readFileSync(join(cwd, 'model', 'weights.bin'));
  const local = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJsonPath), '--db', 'local.sqlite']);
  if (local.code !== 0) throw new Error(local.stderr);
  reference = readCache(join(cwd, 'local.sqlite')).features;
  server = await faultServer({});
});
test.after.always(async () => {
  figures.write();
  await server?.close();
  await temp.remove();
});

/** Serves the model under a fresh prefix with the given faults. */
function serveModel(prefix: string, shard: Partial<Route> = {}, json: Partial<Route> = {}): string {
  server.routes[`/${prefix}/model.json`] = { type: 'application/json', body: modelJson, ...json };
  server.routes[`/${prefix}/weights.bin`] = { body: weights, ...shard };
  return server.url(`/${prefix}/model.json`);
}

/** The model cache folders and what is in them. */
function modelCache(home: string): string[] {
  const root = join(home, '.model-cache');
  if (!existsSync(root)) return [];
  return readdirSync(root).flatMap((folder) => readdirSync(join(root, folder)).map((file) => `${folder}/${file}`));
}

const extractFrom = (url: string, db: string) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(url), '--db', db];

function oneLine(r: CliResult): { ok: boolean; line: string } {
  const errors = errorLines(r);
  const lines = r.stderr.trimEnd().split('\n');
  const ok = r.code === 1 && errors.length === 1 && lines[lines.length - 1] === errors[0] && !/^\s+at /m.test(r.stderr) && !errors[0].includes('unexpected error');
  return { ok, line: errors[0] ?? r.stderr.trim().split('\n').pop() ?? '' };
}

test.serial('5.01-5.03 connection cut in model.json or weights.bin (with and without Content-Length): no partial file, one line, rerun is clean', async (t) => {
  const cuts: { name: string; shard?: Partial<Route>; json?: Partial<Route> }[] = [
    { name: 'weights.bin cut at 0 bytes', shard: { cutAfter: 0 } },
    { name: 'weights.bin cut at 1 byte', shard: { cutAfter: 1 } },
    { name: 'weights.bin cut at half', shard: { cutAfter: weights.length >> 1 } },
    { name: 'weights.bin cut 1 byte short', shard: { cutAfter: weights.length - 1 } },
    { name: 'model.json cut at half', json: { cutAfter: modelJson.length >> 1 } },
    { name: 'weights.bin cut at half, chunked (no Content-Length)', shard: { cutAfter: weights.length >> 1, noLength: true } },
    { name: 'model.json cut at half, chunked (no Content-Length)', json: { cutAfter: modelJson.length >> 1, noLength: true } },
  ];
  const dir = join(cwd, 'cuts');
  const problems: string[] = [];
  const lines: string[] = [];
  for (const [i, cut] of cuts.entries()) {
    rmSync(join(cwd, '.model-cache'), { recursive: true, force: true });
    const url = serveModel(`cut${i}`, cut.shard, cut.json);
    const r = await runPipeline(cwd, extractFrom(url, join(dir, `cut${i}.sqlite`)));
    const { ok, line } = oneLine(r);
    lines.push(line);
    const files = modelCache(cwd);
    const complete = files.filter((f) => /\/(model\.json|weights\.bin|download\.json)$/.test(f));
    const partial = files.filter((f) => f.includes('.partial'));
    t.log(`${cut.name}: exit ${r.code}: ${line}; cache holds [${files.join(', ')}]`);
    if (!ok) problems.push(`${cut.name}: not one line / exit 1: ${line}`);
    // model.json may be complete when only the shard was cut, but never download.json or weights.bin.
    const wrongful = complete.filter((f) => (cut.json ? true : !f.endsWith('/model.json')));
    if (wrongful.length) problems.push(`${cut.name}: left ${wrongful.join(', ')}`);
    if (partial.length) problems.push(`${cut.name}: left ${partial.join(', ')}`);
    if (existsSync(join(dir, `cut${i}.sqlite`)) && readCache(join(dir, `cut${i}.sqlite`)).featureRows > 0) problems.push(`${cut.name}: features were written`);
  }
  // The same URL, now healthy: the rerun downloads and gives the local model's numbers.
  const url = serveModel('cut0');
  const rerun = await runPipeline(cwd, extractFrom(url, join(cwd, 'healed.sqlite')));
  t.is(rerun.code, 0, rerun.stderr);
  const healed = readCache(join(cwd, 'healed.sqlite')).features;
  const same = healed.size === reference.size && [...reference].every(([h, v]) => healed.get(h)?.equals(v));
  if (!same) problems.push('rerun after the cuts: features differ from the local model');
  figures.add({
    case: '5.01 download cut (model.json / weights.bin, with and without Content-Length)',
    tries: cuts.length,
    result: problems.length
      ? `${problems.length} problems: ${problems[0]}`
      : `no partial or unverified file left in ${cuts.length} cuts; one line each (e.g. \`${lines[2].replace(/http:\/\/127\.0\.0\.1:\d+/, 'URL')}\`); healthy rerun = local model bitwise`,
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});

test.serial('5.04 a cached download corrupted on disk fails its hash check and is fetched again', async (t) => {
  rmSync(join(cwd, '.model-cache'), { recursive: true, force: true });
  const url = serveModel('disk');
  const first = await runPipeline(cwd, extractFrom(url, join(cwd, 'disk.sqlite')));
  t.is(first.code, 0, first.stderr);
  const files = modelCache(cwd);
  const shard = join(cwd, '.model-cache', files.find((f) => f.endsWith('/weights.bin'))!);
  const bytes = readFileSync(shard);
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(shard, bytes);
  const hitsBefore = server.hits.get('/disk/weights.bin') ?? 0;
  rmSync(join(cwd, 'disk.sqlite'));
  const second = await runPipeline(cwd, extractFrom(url, join(cwd, 'disk.sqlite')));
  const refetched = (server.hits.get('/disk/weights.bin') ?? 0) - hitsBefore;
  const features = readCache(join(cwd, 'disk.sqlite')).features;
  const same = features.size === reference.size && [...reference].every(([h, v]) => features.get(h)?.equals(v));
  const ok = second.code === 0 && refetched === 1 && /failed its hash check/.test(second.stderr) && same;
  figures.add({
    case: '5.04 cached weights corrupted on disk',
    tries: 1,
    result: `hash check ${/failed its hash check/.test(second.stderr) ? 'caught it' : 'MISSED it'}, shard fetched again ${refetched}x, features ${same ? 'equal the local model' : 'DIFFER'}`,
    held: ok,
  });
  t.true(ok, second.stderr);
});

test.serial('5.05 wrong bytes of the right length for weights.bin: the existing cache is not mixed with them', async (t) => {
  rmSync(join(cwd, '.model-cache'), { recursive: true, force: true });
  const wrong = Buffer.from(weights);
  for (let i = 0; i < wrong.length; i += 97) wrong[i] ^= 0x5a;
  const url = serveModel('wrong', { body: wrong });
  // An existing good cache from the same URL's good weights (local copy) ...
  const db = join(cwd, 'mixed.sqlite');
  rmSync(db, { force: true });
  const good = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJsonPath), '--db', db]);
  t.is(good.code, 0, good.stderr);
  const before = readCache(db);
  // ... then the corrupted download. Without a pinned sha256 for models nothing can say the bytes are wrong,
  // but the weights hash is part of the feature set id: the new vectors must land in a separate feature set.
  const r = await runPipeline(cwd, extractFrom(url, db));
  const after = readCache(db);
  t.is(before.featureSets.length, 1);
  const kept = readCache(db, before.featureSets[0]);
  const untouched = before.features.size > 0 && [...before.features].every(([h, v]) => kept.features.get(h)?.equals(v));
  const separate = after.featureSets.length === 2;
  figures.add({
    case: '5.05 wrong bytes of the right length (model, no pinned hash)',
    tries: 1,
    result:
      `${r.code === 0 ? 'accepted (no model sha256 option to pin the weights)' : `refused: ${oneLine(r).line}`}; ` +
      `${separate ? 'stored as a separate feature set' : `${after.featureSets.length} feature sets`}, existing rows ${untouched ? 'untouched' : 'CHANGED'}`,
    held: untouched && (separate || r.code === 1),
  });
  t.true(untouched);
  t.true(separate || r.code === 1);
});

test.serial('5.06-5.07 dataset zip: wrong bytes and cut connections are caught by sha256 / length; nothing left at the root or zip path', async (t) => {
  const files = ['a/a_0.jpg', 'a/a_1.jpg', 'b/b_0.jpg', 'b/b_1.jpg'].map((name) => ({
    name: `dataset-resized/${name}`,
    data: readFileSync(join(cwd, 'data', name.replace(/_(\d)/, '_$1'))),
  }));
  const zip = await zipOf(files);
  const wrong = Buffer.from(zip);
  wrong[wrong.length >> 1] ^= 0xff;
  const variants: { name: string; route: Route }[] = [
    { name: 'wrong bytes, same length', route: { type: 'application/zip', body: wrong } },
    { name: 'cut at half', route: { type: 'application/zip', body: zip, cutAfter: zip.length >> 1 } },
    { name: 'cut at half, chunked', route: { type: 'application/zip', body: zip, cutAfter: zip.length >> 1, noLength: true } },
    { name: 'HTML error page instead of the zip', route: { type: 'text/html', body: Buffer.from('<html><body>rate limited</body></html>') } },
  ];
  const problems: string[] = [];
  const lines: string[] = [];
  for (const [i, v] of variants.entries()) {
    const dir = join(cwd, `zip${i}`);
    rmSync(dir, { recursive: true, force: true });
    server.routes[`/zip${i}/data.zip`] = v.route;
    const config = join(cwd, `zip${i}.yaml`);
    writeFileSync(config, `dataset:\n  root: zip${i}/trashnet\n  url: ${server.url(`/zip${i}/data.zip`)}\n  sha256: ${sha256(zip)}\n`);
    const r = await runPipeline(cwd, ['extract', '--config', config, ...EXTRACT_FLAGS(modelJsonPath), '--db', join(cwd, `zip${i}.sqlite`)]);
    const { ok, line } = oneLine(r);
    lines.push(line);
    const left = existsSync(dir) ? readdirSync(dir) : [];
    t.log(`${v.name}: exit ${r.code}: ${line}; left [${left.join(', ')}]`);
    if (!ok) problems.push(`${v.name}: ${line}`);
    if (left.length) problems.push(`${v.name}: left ${left.join(', ')}`);
  }
  // Healthy server: the zip is verified, unpacked, extracted.
  server.routes['/zip0/data.zip'] = { type: 'application/zip', body: zip };
  rmSync(join(cwd, 'zip0'), { recursive: true, force: true });
  const good = await runPipeline(cwd, ['extract', '--config', join(cwd, 'zip0.yaml'), ...EXTRACT_FLAGS(modelJsonPath), '--db', join(cwd, 'zip0.sqlite')]);
  if (good.code !== 0) problems.push(`healthy zip: exit ${good.code}: ${good.stderr}`);
  else if (readCache(join(cwd, 'zip0.sqlite')).featureRows !== 4) problems.push('healthy zip: not 4 rows');
  figures.add({
    case: '5.06 dataset zip: wrong bytes / cut / HTML (sha256 pinned)',
    tries: variants.length,
    result: problems.length
      ? `${problems.length} problems: ${problems[0]}`
      : `caught every time, nothing left at the zip or dataset path (e.g. \`${lines[0].replace(/http:\/\/127\.0\.0\.1:\d+/, 'URL').replace(cwd + '/', '')}\`); healthy rerun extracts`,
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});

test.serial('5.08 SIGKILL during a slow download: nothing where a complete file is expected; the rerun completes', async (t) => {
  rmSync(join(cwd, '.model-cache'), { recursive: true, force: true });
  const url = serveModel('slow', { trickleMs: 2 });
  const r = await runPipeline(cwd, extractFrom(url, join(cwd, 'slow.sqlite')), {
    killAfterCondition: { check: () => modelCache(cwd).some((f) => f.includes('weights.bin.partial')), delayMs: 150 },
  });
  const files = modelCache(cwd);
  const complete = files.filter((f) => /\/(weights\.bin|download\.json)$/.test(f));
  const orphans = files.filter((f) => f.includes('.partial'));
  server.routes['/slow/weights.bin'] = { body: weights };
  const rerun = await runPipeline(cwd, extractFrom(url, join(cwd, 'slow.sqlite')));
  const leftover = modelCache(cwd).filter((f) => f.includes('.partial'));
  const features = readCache(join(cwd, 'slow.sqlite')).features;
  const same = features.size === reference.size && [...reference].every(([h, v]) => features.get(h)?.equals(v));
  const ok = r.killed && complete.length === 0 && rerun.code === 0 && same && leftover.length === 0;
  figures.add({
    case: '5.08 SIGKILL mid-download',
    tries: 1,
    result:
      `${r.killed ? 'killed mid-shard' : 'NOT killed'}; no weights.bin/download.json left (${orphans.length} .partial-PID file of the killed process); ` +
      `rerun exit ${rerun.code}, removed ${leftover.length === 0 ? 'it' : 'NOT all of them'}, features ${same ? 'equal the local model' : 'DIFFER'}`,
    held: ok,
  });
  t.true(r.killed, 'the kill landed during the download');
  t.deepEqual(complete, []);
  t.is(rerun.code, 0, rerun.stderr);
  t.deepEqual(leftover, [], 'the rerun removes the killed download\'s temporary file');
  t.true(same);
});
