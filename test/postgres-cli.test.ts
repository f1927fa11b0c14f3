/**
 * The commands on a real throwaway PostgreSQL server, through the `pipeline` binary:
 * several `extract` processes share one feature set's shards, and everything after
 * (cache, export-features, sweep, report --json, export) must give what the same commands
 * give on SQLite: bitwise-equal features, equal sweep results. Workers killed mid-shard:
 * test/postgres-kills.test.ts.
 */
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runPipeline, type CliResult } from './helpers/cli.js';
import { EXTRACT_FLAGS, SWEEP_YAML } from './helpers/fault-fixtures.js';
import { makeDataset } from './helpers/images.js';
import { freshDatabase, postgresSuite } from './helpers/postgres.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';
import test from 'ava';

const pg = postgresSuite();
const temp = fileTempDir('pipeline-postgres-cli-');
test.after.always(() => temp.remove());

interface Fixture {
  readonly cwd: string;
  readonly extract: (db: string, ...more: string[]) => string[];
  readonly images: number;
  readonly bad: number;
}

let fixture: Promise<Fixture> | undefined;
/** A generated dataset (with one broken file), a random small model, a small sweep config; and the SQLite reference run. */
const setUp = () =>
  (fixture ??= (async () => {
    const cwd = temp.dir;
    const data = await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c'], perClass: 12, width: 48, height: 40, seed: 4100, corrupt: true });
    const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 77 });
    await writeFile(join(cwd, 'sweep.yaml'), SWEEP_YAML);
    const extract = (db: string, ...more: string[]) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db, ...more];
    const ref = await runPipeline(cwd, extract('ref.sqlite'));
    if (ref.code !== 0) throw new Error(`reference extract failed: ${ref.stderr}`);
    for (const args of [
      ['export-features', '--db', 'ref.sqlite', '--out', 'ref-features'],
      ['sweep', '--db', 'ref.sqlite', '--config', 'sweep.yaml'],
      ['report', '--db', 'ref.sqlite', '--json'],
      ['audit', '--db', 'ref.sqlite', '--json'],
    ]) {
      const r = await runPipeline(cwd, args);
      if (r.code !== 0) throw new Error(`reference ${args[0]} failed: ${r.stderr}`);
      if (args[0] === 'report' || args[0] === 'audit') await writeFile(join(cwd, `ref-${args[0]}.json`), r.stdout);
    }
    return { cwd, extract, images: data.images.length, bad: data.bad.length };
  })());

const ok = (t: { is: (a: unknown, b: unknown, m?: string) => void }, r: CliResult, what: string) =>
  t.is(r.code, 0, `${what} exited ${r.code} (${r.signal ?? 'no signal'}):\n${r.stderr}`);

/** export-features of `db` into `out`, compared byte for byte with the SQLite run's. */
async function sameFeatures(t: Parameters<Parameters<typeof pg.test>[1]>[0], cwd: string, db: string, out: string) {
  ok(t, await runPipeline(cwd, ['export-features', '--db', db, '--out', out]), 'export-features');
  for (const file of ['features.npy', 'index.csv']) {
    t.true((await readFile(join(cwd, out, file))).equals(await readFile(join(cwd, 'ref-features', file))), `${file} differs from the SQLite run's`);
  }
}

/** What of `report --json` must not depend on the store: everything but times, rates and ids of runs in progress. */
function results(json: string) {
  const facts = JSON.parse(json);
  return {
    labels: facts.labels,
    varying: facts.varying_params,
    split: [facts.sweep.split, facts.sweep.split_sizes, facts.sweep.planned_runs, facts.sweep.finished_runs, facts.sweep.status],
    extraction: [facts.extraction.feature_set, facts.extraction.images, facts.extraction.failures],
    best: facts.best,
    variants: facts.variants,
    runs: facts.runs.map(({ train_seconds: _, ...run }: { train_seconds: number }) => run),
  };
}

pg.serial('three extract processes share the shards; export-features, sweep and report --json equal the SQLite run', async (t, cluster) => {
  const { cwd, extract, images, bad } = await setUp();
  const url = freshDatabase(cluster, 'cli');
  const workers = await Promise.all([1, 2, 3].map(() => runPipeline(cwd, extract(url, '--shard-size', '5'))));
  for (const [i, w] of workers.entries()) {
    ok(t, w, `worker ${i + 1}`);
    t.regex(w.stdout, /^cluster: 8\/8 shards done \(\d+ by this worker\), 0 running, 0 waiting, 0 failed; \d+ workers seen in the last minute; this worker [\d.]+ images\/s, all workers [\d.]+ images\/s while it ran$/m);
    t.notRegex(w.stdout + w.stderr, /postgres:\/\/[^\s]*:[^\s*]+@/, 'no password printed');
  }
  t.log(workers.map((w) => w.stdout.trim()).join('\n'));
  // Every shard is done by exactly one worker's commit, whoever it was.
  const byWorker = workers.map((w) => Number(/\((\d+) by this worker\)/.exec(w.stdout)![1]));
  t.is(byWorker.reduce((a, b) => a + b, 0), 8, `shards per worker: ${byWorker.join(', ')}`);
  // Started together, they hash one after another: only the first reads the files.
  const hashed = workers.map((w) => /^hashed (\d+) files, (\d+) unchanged/m.exec(w.stderr)!.slice(1).join('/')).sort();
  t.deepEqual(hashed, ['0/37', '0/37', '37/0']);

  const cache = await runPipeline(cwd, ['cache', '--db', url]);
  ok(t, cache, 'cache');
  t.regex(cache.stdout, new RegExp(`${images} vectors for ${images + bad} images, ${bad} failures`));
  t.regex(cache.stdout, /shards 8 done, 0 running, 0 waiting, 0 failed of 8 \(37\/37 images\); \d+ workers seen in the last minute, [\d.]+ images\/s/);

  await sameFeatures(t, cwd, url, 'pg-features');

  ok(t, await runPipeline(cwd, ['sweep', '--db', url, '--config', 'sweep.yaml']), 'sweep');
  const report = await runPipeline(cwd, ['report', '--db', url, '--json']);
  ok(t, report, 'report --json');
  t.deepEqual(results(report.stdout), results(await readFile(join(cwd, 'ref-report.json'), 'utf8')));

  const listed = await runPipeline(cwd, ['report', '--db', url, '--list']);
  t.regex(listed.stdout, /^sweep 1 {2}done {2}feature set \w+ {2}8 runs/m);
  const html = await runPipeline(cwd, ['report', '--db', url, '--html', 'pg-report.html']);
  ok(t, html, 'report --html');
  t.regex(await readFile(join(cwd, 'pg-report.html'), 'utf8'), /<html/i);
  ok(t, await runPipeline(cwd, ['export', '--db', url, '--out', 'pg-model']), 'export');
  const metadata = JSON.parse(await readFile(join(cwd, 'pg-model', 'metadata.json'), 'utf8'));
  t.is(metadata.run_key, results(report.stdout).best.run_key);

  // The audit's findings (perceptual hashes, neighbours, label issues, the sweep's leak-free accuracy) too.
  const audit = await runPipeline(cwd, ['audit', '--db', url, '--json']);
  ok(t, audit, 'audit --json');
  const findings = (json: string) => {
    const { audit_id: _, seconds: __, ...rest } = JSON.parse(json);
    return rest;
  };
  t.deepEqual(findings(audit.stdout), findings(await readFile(join(cwd, 'ref-audit.json'), 'utf8')));

  // A second round finds the plan complete: nothing to extract (the broken file's failure
  // stands: its content, hence the listing, did not change), exit 0 at once.
  const again = await runPipeline(cwd, extract(url, '--shard-size', '5'));
  ok(t, again, 'rerun');
  t.regex(again.stdout, /^done: 37 images, 36 already cached, 0 extracted .*, 0 failed$/m);
  t.regex(again.stdout, /^cluster: 8\/8 shards done \(0 by this worker\)/m);
  // The files were hashed by the first workers: this one reads none of them, but one whose
  // modification time moved is read again (same bytes, so the same listing and plan).
  t.regex(again.stderr, /^hashed 0 files, 37 unchanged since another worker hashed them$/m);
  const touched = join(cwd, 'data', 'b', 'b_3.jpg');
  const later = new Date(Date.now() + 5000);
  await utimes(touched, later, later);
  const touchedRun = await runPipeline(cwd, extract(url, '--shard-size', '5'));
  ok(t, touchedRun, 'run after touching a file');
  t.regex(touchedRun.stderr, /^hashed 1 files, 36 unchanged since another worker hashed them$/m);
  t.regex(touchedRun.stdout, /^cluster: 8\/8 shards done \(0 by this worker\)/m);
});

test('every command on an unreachable server: one line naming host and port, never the password, exit 1', async (t) => {
  const url = 'postgres://someone:s3cret-word@127.0.0.1:1/pipeline';
  for (const args of [['cache'], ['report', '--json'], ['sweep'], ['export-features', '--out', 'never']]) {
    const r = await runPipeline(temp.dir, [...args, '--db', url]);
    t.is(r.code, 1, `${args[0]}: ${r.stderr}`);
    t.is(r.stderr, 'pipeline: cannot connect to PostgreSQL server 127.0.0.1:1: connection refused (is it running and listening there?)\n', args[0]);
    t.notRegex(r.stdout + r.stderr, /s3cret/);
  }
});

test('--shard-size and --shard-timeout without a postgres:// --db: one line naming the flag, exit 1', async (t) => {
  const r = await runPipeline(temp.dir, ['extract', '--data', '.', '--db', 'x.sqlite', '--shard-size', '10']);
  t.is(r.code, 1);
  t.regex(r.stderr, /^pipeline: --shard-size needs a postgres:\/\/ --db \(cache\.db is .*x\.sqlite\)\n$/);
});
