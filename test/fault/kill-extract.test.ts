/**
 * Issue part 2 (extract): SIGKILL `pipeline extract` at 20 seeded random moments, rerunning
 * after each. A clean run is measured first: its total time, when it logged that extraction
 * starts ("N distinct images to extract"), and when its first and last batch became visible
 * in SQLite. Start-up (Node, the dataset scan, wasm workers loading the weights) takes most
 * of a run and its length varies a lot on a shared machine, so the kills are aimed three
 * ways, in turn A, C, B, C: (A) from spawn, uniform over 5%..105% of the clean run; (B) from the
 * "to extract" line, uniform over the clean run's span from that line to its last commit
 * (+20%); (C) from the moment this run's first new row is visible in SQLite, uniform over
 * the clean run's commit span (+20%). (C) makes sure the interesting case, a kill between
 * batch commits, happens many times. The input is 160x160 here (not 64x64) so that the
 * commit window is long enough to aim at. After every kill the cache
 * passes `PRAGMA integrity_check`, holds one row per content hash, and every row it holds
 * is bitwise equal to the clean run's. The final uninterrupted rerun leaves exactly the
 * clean run's rows. When a killed run happens to finish the cache, the next kill starts
 * over from an empty cache (a new round), so most kills land in a run with work to do.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { type CacheState, type RunOptions, readCache, rowCount, rng, runPipeline, watchCommits } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const KILLS = 20;
const SEED = 0x5eed2026;
const figures = new Figures('kill-extract');
const temp = fileTempDir('pipeline-fault-kill-extract-');
test.after.always(async () => {
  figures.write();
  await temp.remove();
});

const removeDb = (path: string) => {
  for (const suffix of ['', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
};

test.serial('2.1 SIGKILL extract at 20 random moments: nothing lost, nothing duplicated, bitwise equal to a clean run', async (t) => {
  const cwd = temp.dir;
  const data = await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c', 'd'], perClass: 14, width: 48, height: 40, seed: 7000, zeroByte: true, textAsJpeg: true });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 202 });
  const args = (db: string) =>
    ['extract', '--data', 'data', '--model', modelJson, '--size', '160x160', '--backend', 'wasm', '--batch', '4', '--db', db];

  const ANCHOR = /distinct images to extract/;
  const watch = watchCommits(join(cwd, 'clean.sqlite'), performance.now());
  const clean = await runPipeline(cwd, args('clean.sqlite'), { killAfterOutput: { pattern: ANCHOR, delayMs: 1e9 } });
  const window = watch.stop();
  t.is(clean.code, 0, clean.stderr);
  const reference = readCache(join(cwd, 'clean.sqlite'));
  t.is(reference.features.size, data.images.length);
  t.is(reference.failures.size, data.bad.length);
  const T = clean.ms;
  const anchor = clean.anchorMs ?? 0;
  const commitStart = Number.isNaN(window.first) ? anchor : window.first;
  const commitEnd = Number.isNaN(window.last) ? T : window.last;
  const aimed = { A: 0, B: 0, C: 0 };
  t.log(
    `clean run: ${T.toFixed(0)} ms for ${data.images.length} good + ${data.bad.length} bad files; extraction starts at ${anchor.toFixed(0)} ms, ` +
      `rows committed from ${window.first.toFixed(0)} to ${window.last.toFixed(0)} ms`,
  );

  const db = join(cwd, 'killed.sqlite');
  const random = rng(SEED);
  const landed = { beforeAnyCommit: 0, midRun: 0, afterTheEnd: 0 };
  let rounds = 1;
  let problems: string[] = [];
  let previous: CacheState | undefined;
  for (let i = 0; i < KILLS; i++) {
    const aim = (['A', 'C', 'B', 'C'] as const)[i % 4];
    const before = previous?.features.size ?? 0;
    const delay = Math.round(
      aim === 'A' ? (0.05 + random()) * T : aim === 'B' ? random() * 1.2 * (commitEnd - anchor) : random() * 1.2 * (commitEnd - commitStart),
    );
    const how: RunOptions =
      aim === 'A'
        ? { killAfterMs: delay }
        : aim === 'B'
          ? { killAfterOutput: { pattern: ANCHOR, delayMs: delay } }
          : { killAfterCondition: { check: () => rowCount(db, 'features') > before, delayMs: delay } };
    const run = await runPipeline(cwd, args('killed.sqlite'), how);
    aimed[aim]++;
    const log = `kill ${i + 1} (${aim}): +${delay} ms, ${run.killed ? 'killed' : `exited ${run.code}`} after ${run.ms.toFixed(0)} ms`;
    if (!run.killed) {
      landed.afterTheEnd++;
      if (run.code !== 0) problems.push(`kill ${i + 1}: run ended by itself with code ${run.code}: ${run.stderr}`);
    }
    if (!existsSync(db)) {
      landed.beforeAnyCommit++;
      t.log(`${log}; no database yet`);
      continue;
    }
    const state = readCache(db);
    t.log(`${log}; ${state.features.size} rows (${previous?.features.size ?? 0} before)`);
    if (state.integrity !== 'ok') problems.push(`kill ${i + 1} at ${delay} ms: integrity_check: ${state.integrity}`);
    if (state.featureRows !== state.distinctFeatures) problems.push(`kill ${i + 1}: ${state.featureRows} rows for ${state.distinctFeatures} keys`);
    for (const [hash, vector] of state.features) {
      const expected = reference.features.get(hash);
      if (!expected) problems.push(`kill ${i + 1}: a row for unknown content ${hash}`);
      else if (!expected.equals(vector)) problems.push(`kill ${i + 1}: the row of ${hash} differs from the clean run`);
    }
    for (const [hash, vector] of previous?.features ?? []) {
      if (!state.features.get(hash)?.equals(vector)) problems.push(`kill ${i + 1}: a committed row was lost or changed (${hash})`);
    }
    if (run.killed) {
      if (state.features.size === (previous?.features.size ?? 0)) landed.beforeAnyCommit++;
      else landed.midRun++;
    }
    previous = state;
    if (state.features.size === reference.features.size && i < KILLS - 1) {
      // This round is complete: start the next kills from an empty cache.
      removeDb(db);
      previous = undefined;
      rounds++;
    }
  }
  const final = await runPipeline(cwd, args('killed.sqlite'));
  t.is(final.code, 0, final.stderr);
  const end = readCache(db);
  const missing = [...reference.features.keys()].filter((h) => !end.features.has(h));
  const differing = [...reference.features].filter(([h, v]) => end.features.has(h) && !end.features.get(h)!.equals(v)).length;
  if (end.integrity !== 'ok') problems.push(`final: integrity_check: ${end.integrity}`);
  if (end.featureRows !== reference.features.size) problems.push(`final: ${end.featureRows} rows, expected ${reference.features.size}`);
  if (missing.length) problems.push(`final: ${missing.length} good images missing`);
  if (differing) problems.push(`final: ${differing} rows differ from the clean run`);
  t.deepEqual(
    end.items.map((i) => `${i.path} ${i.sha256}`),
    reference.items.map((i) => `${i.path} ${i.sha256}`),
    'the dataset listing equals the clean run',
  );
  t.deepEqual([...end.failures.keys()].sort(), [...reference.failures.keys()].sort(), 'the bad files are recorded as failures');
  problems = [...new Set(problems)];
  t.log(`kills: ${JSON.stringify(landed)}, ${rounds} round(s) from an empty cache`);
  figures.add({
    case: '2.1 SIGKILL during extract',
    tries: KILLS,
    result:
      `kills aimed ${aimed.A} from spawn, ${aimed.B} from extraction start, ${aimed.C} from the first commit; landed ` +
      `${landed.midRun} between commits, ${landed.beforeAnyCommit} before a batch committed, ${landed.afterTheEnd} after the end (${rounds} rounds); ` +
      (problems.length ? `${problems.length} problems: ${problems[0]}` : `integrity ok after every kill; final ${end.featureRows} rows = ${data.images.length} good images, bitwise equal to a clean run`),
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});
