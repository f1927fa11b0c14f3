/**
 * SIGKILL `pipeline extract` in the middle of its work, again and again, rerunning after
 * each kill. A clean run first gives the reference rows and how long one batch takes to
 * commit. Each kill is aimed from observed progress: a target row count strictly between
 * what the cache held before the run and the total is drawn, the database is polled, and
 * the process is killed a random fraction of one batch after the target became visible.
 * Only kills after which the cache holds more rows than before and fewer than the total
 * count as mid-run; the test retries until at least MID_RUN_KILLS landed (at most
 * MAX_ATTEMPTS tries) and fails otherwise. After every kill the cache passes
 * `PRAGMA integrity_check`, holds one row per content hash, keeps every row committed
 * before, and every row is bitwise equal to the clean run's. When too little work is left
 * to aim at (fewer than two batches), the next kill starts over from an empty cache. The
 * final uninterrupted rerun leaves exactly the clean run's rows. The input is 160x160 so a
 * batch takes long enough to aim inside.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { type CacheState, readCache, rowCount, rng, runPipeline, watchCommits } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const MID_RUN_KILLS = 5;
const MAX_ATTEMPTS = 20;
const BATCH = 4;
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

test.serial(`2.1 SIGKILL extract mid-run (at least ${MID_RUN_KILLS} times): nothing lost, nothing duplicated, bitwise equal to a clean run`, async (t) => {
  const cwd = temp.dir;
  const data = await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c', 'd'], perClass: 14, width: 48, height: 40, seed: 7000, zeroByte: true, textAsJpeg: true });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 202 });
  const args = (db: string) =>
    ['extract', '--data', 'data', '--model', modelJson, '--size', '160x160', '--backend', 'wasm', '--batch', String(BATCH), '--db', db];

  const watch = watchCommits(join(cwd, 'clean.sqlite'), performance.now());
  const clean = await runPipeline(cwd, args('clean.sqlite'));
  const window = watch.stop();
  t.is(clean.code, 0, clean.stderr);
  const reference = readCache(join(cwd, 'clean.sqlite'));
  const total = reference.features.size;
  t.is(total, data.images.length);
  t.is(reference.failures.size, data.bad.length);
  const batchMs = Number.isNaN(window.first) ? 200 : Math.max(20, (window.last - window.first) / Math.max(1, Math.ceil(total / BATCH) - 1));
  t.log(`clean run: ${clean.ms.toFixed(0)} ms for ${total} good + ${data.bad.length} bad files; rows committed from ${window.first.toFixed(0)} to ${window.last.toFixed(0)} ms (~${batchMs.toFixed(0)} ms a batch)`);

  const db = join(cwd, 'killed.sqlite');
  const random = rng(SEED);
  const landed = { midRun: 0, beforeAnyCommit: 0, afterTheEnd: 0 };
  let attempts = 0;
  let rounds = 1;
  let problems: string[] = [];
  let previous: CacheState | undefined;
  while (landed.midRun < MID_RUN_KILLS && attempts < MAX_ATTEMPTS) {
    attempts++;
    const before = previous?.features.size ?? 0;
    // A row count this run must pass but not finish at, and a moment inside the batch after it.
    const target = before + 1 + Math.floor(random() * (total - 1 - before));
    const delay = Math.round(random() * batchMs);
    const run = await runPipeline(cwd, args('killed.sqlite'), { killAfterCondition: { check: () => rowCount(db, 'features') >= target, delayMs: delay } });
    const state = existsSync(db) ? readCache(db) : undefined;
    const after = state?.features.size ?? 0;
    const where = !run.killed || after === total ? 'afterTheEnd' : after > before ? 'midRun' : 'beforeAnyCommit';
    landed[where]++;
    t.log(`kill ${attempts}: aimed at row ${target} + ${delay} ms; ${run.killed ? 'killed' : `exited ${run.code}`} after ${run.ms.toFixed(0)} ms; ${after} rows (${before} before): ${where}`);
    if (!run.killed && run.code !== 0) problems.push(`kill ${attempts}: run ended by itself with code ${run.code}: ${run.stderr}`);
    if (!state) continue;
    if (state.integrity !== 'ok') problems.push(`kill ${attempts}: integrity_check: ${state.integrity}`);
    if (state.featureRows !== state.distinctFeatures) problems.push(`kill ${attempts}: ${state.featureRows} rows for ${state.distinctFeatures} keys`);
    for (const [hash, vector] of state.features) {
      const expected = reference.features.get(hash);
      if (!expected) problems.push(`kill ${attempts}: a row for unknown content ${hash}`);
      else if (!expected.equals(vector)) problems.push(`kill ${attempts}: the row of ${hash} differs from the clean run`);
    }
    for (const [hash, vector] of previous?.features ?? []) {
      if (!state.features.get(hash)?.equals(vector)) problems.push(`kill ${attempts}: a committed row was lost or changed (${hash})`);
    }
    previous = state;
    if (total - after < 2 * BATCH && landed.midRun < MID_RUN_KILLS) {
      // Too little left to land a kill between two commits: start again from an empty cache.
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
  if (end.featureRows !== total) problems.push(`final: ${end.featureRows} rows, expected ${total}`);
  if (missing.length) problems.push(`final: ${missing.length} good images missing`);
  if (differing) problems.push(`final: ${differing} rows differ from the clean run`);
  t.deepEqual(
    end.items.map((i) => `${i.path} ${i.sha256}`),
    reference.items.map((i) => `${i.path} ${i.sha256}`),
    'the dataset listing equals the clean run',
  );
  t.deepEqual([...end.failures.keys()].sort(), [...reference.failures.keys()].sort(), 'the bad files are recorded as failures');
  problems = [...new Set(problems)];
  if (landed.midRun < MID_RUN_KILLS) problems.push(`only ${landed.midRun} of ${attempts} kills landed mid-run (${MID_RUN_KILLS} required)`);
  t.log(`kills: ${JSON.stringify(landed)} in ${attempts} attempts, ${rounds} round(s) from an empty cache`);
  figures.add({
    case: '2.1 SIGKILL during extract',
    tries: attempts,
    result:
      `aimed from committed rows; ${landed.midRun} landed between commits (${MID_RUN_KILLS} required), ${landed.beforeAnyCommit} before the run's first commit, ` +
      `${landed.afterTheEnd} after the end (${rounds} rounds); ` +
      (problems.length ? `${problems.length} problems: ${problems[0]}` : `integrity ok after every kill; final ${end.featureRows} rows = ${data.images.length} good images, bitwise equal to a clean run`),
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});
