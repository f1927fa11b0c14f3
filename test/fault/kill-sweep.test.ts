/**
 * Issue part 2 (sweep): SIGKILL `pipeline sweep --resume` at 8 seeded random moments,
 * resuming after each. Runs that finished are never retrained (their stored rows, including
 * finished_at, stay byte for byte), nothing committed is lost, the database passes
 * integrity_check after every kill, and the final stored runs equal a clean sweep's
 * bitwise (every column but the timings). The sweep: 2 x 2 variants (hidden 0/128, learning
 * rate 0.001/0.01) x 2 seeds, up to 30 epochs with early stopping, so runs finish at
 * different moments. Kills are aimed as in kill-extract: (A) from spawn over the clean
 * run's duration, (B) from the "to train" line, (C) from the moment a new run row appears,
 * over the span in which the clean sweep stored its remaining runs.
 */
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { type RunOptions, query, readCache, rng, rowCount, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS, SWEEP_YAML } from '../helpers/fault-fixtures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const KILLS = 8;
const SEED = 0x5eed5eed;
const figures = new Figures('kill-sweep');
const temp = fileTempDir('pipeline-fault-kill-sweep-');
test.after.always(async () => {
  figures.write();
  await temp.remove();
});


/** Every stored run as one comparable string per run key (all columns but sweep id and timings). */
function storedRuns(db: string): Map<string, { finishedAt: string; content: string }> {
  const rows = query<Record<string, unknown>>(db, 'SELECT * FROM sweep_runs ORDER BY run_key');
  return new Map(
    rows.map((row) => {
      const { sweep_id: _id, finished_at: finishedAt, train_seconds: _seconds, ...rest } = row;
      const content = JSON.stringify(Object.entries(rest).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('hex') : v]));
      return [String(row.run_key), { finishedAt: String(finishedAt), content }];
    }),
  );
}


test.serial('2.2 SIGKILL sweep --resume at 8 random moments: finished runs never retrained, final runs equal a clean sweep', async (t) => {
  const cwd = temp.dir;
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c', 'd'], perClass: 14, width: 48, height: 40, seed: 8000 });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 303 });
  writeFileSync(join(cwd, 'sweep.yaml'), SWEEP_YAML);
  const extract = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', 'features.sqlite']);
  t.is(extract.code, 0, extract.stderr);
  const sweepArgs = (db: string, resume: boolean) => ['sweep', '--config', 'sweep.yaml', '--db', db, ...(resume ? ['--resume'] : [])];

  copyFileSync(join(cwd, 'features.sqlite'), join(cwd, 'clean.sqlite'));
  const ANCHOR = / to train /;
  const commits: number[] = [];
  const started = performance.now();
  let seen = 0;
  const watcher = setInterval(() => {
    const n = rowCount(join(cwd, 'clean.sqlite'), 'sweep_runs');
    for (; seen < n; seen++) commits.push(performance.now() - started);
  }, 10);
  const clean = await runPipeline(cwd, sweepArgs('clean.sqlite', false), { killAfterOutput: { pattern: ANCHOR, delayMs: 1e9 } });
  clearInterval(watcher);
  t.is(clean.code, 0, clean.stderr);
  const reference = storedRuns(join(cwd, 'clean.sqlite'));
  t.is(reference.size, 8);
  const T = clean.ms;
  const anchor = clean.anchorMs ?? 0;
  const commitStart = commits[0] ?? anchor;
  const commitEnd = commits[commits.length - 1] ?? T;
  t.log(`clean sweep: ${T.toFixed(0)} ms; training from ${anchor.toFixed(0)} ms; runs stored at ${commits.map((c) => c.toFixed(0)).join(', ')} ms`);

  const db = join(cwd, 'killed.sqlite');
  const fresh = () => {
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${db}${suffix}`, { force: true });
    copyFileSync(join(cwd, 'features.sqlite'), db);
  };
  fresh();
  const random = rng(SEED);
  const problems: string[] = [];
  const landed = { betweenRuns: 0, beforeAnyRun: 0, afterTheEnd: 0 };
  let rounds = 1;
  let known = new Map<string, { finishedAt: string; content: string }>();
  let resumedRounds = 0;
  for (let i = 0; i < KILLS; i++) {
    const aim = (['A', 'C', 'B', 'C'] as const)[i % 4];
    const before = known.size;
    const delay = Math.round(
      aim === 'A'
        ? (0.05 + random()) * T
        : aim === 'B'
          ? random() * 1.2 * (commitEnd - anchor)
          : // From the next stored run, over what the clean sweep took from its next store to its last.
            random() * 1.2 * (commitEnd - (commits[before] ?? commitStart)),
    );
    const how: RunOptions =
      aim === 'A'
        ? { killAfterMs: delay }
        : aim === 'B'
          ? { killAfterOutput: { pattern: ANCHOR, delayMs: delay } }
          : { killAfterCondition: { check: () => rowCount(db, 'sweep_runs') > before, delayMs: delay } };
    const run = await runPipeline(cwd, sweepArgs('killed.sqlite', true), how);
    if (!run.killed && run.code !== 0) problems.push(`kill ${i + 1}: exited ${run.code} by itself: ${run.stderr}`);
    const integrity = readCache(db).integrity;
    if (integrity !== 'ok') problems.push(`kill ${i + 1}: integrity_check: ${integrity}`);
    const now = storedRuns(db);
    for (const [key, old] of known) {
      const current = now.get(key);
      if (!current) problems.push(`kill ${i + 1}: finished run ${key} was lost`);
      else if (current.finishedAt !== old.finishedAt || current.content !== old.content) problems.push(`kill ${i + 1}: finished run ${key} was retrained`);
    }
    for (const [key, row] of now) {
      if (reference.get(key)?.content !== row.content) problems.push(`kill ${i + 1}: run ${key} differs from the clean sweep`);
    }
    const sweeps = query<{ n: number }>(db, 'SELECT COUNT(*) AS n FROM sweeps')[0].n;
    if (sweeps > 1) problems.push(`kill ${i + 1}: ${sweeps} sweep rows; --resume should continue the one sweep`);
    if (!run.killed) landed.afterTheEnd++;
    else if (now.size > before) landed.betweenRuns++;
    else landed.beforeAnyRun++;
    if (before > 0 && now.size > before) resumedRounds++;
    t.log(`kill ${i + 1} (${aim}): +${delay} ms, ${run.killed ? 'killed' : `exited ${run.code}`} after ${run.ms.toFixed(0)} ms; ${now.size} runs stored (${before} before)`);
    known = now;
    if (now.size === reference.size && i < KILLS - 1) {
      fresh();
      known = new Map();
      rounds++;
    }
  }
  const finishedBefore = known.size;
  const final = await runPipeline(cwd, sweepArgs('killed.sqlite', true));
  t.is(final.code, 0, final.stderr);
  const trainedNow = Number(/(\d+) runs trained now/.exec(final.stdout)?.[1]);
  if (trainedNow !== reference.size - finishedBefore) problems.push(`final resume trained ${trainedNow} runs, expected ${reference.size - finishedBefore}`);
  const end = storedRuns(db);
  for (const [key, old] of known) if (end.get(key)?.finishedAt !== old.finishedAt) problems.push(`final: finished run ${key} was retrained`);
  const equal = [...reference].filter(([key, row]) => end.get(key)?.content === row.content).length;
  if (equal !== reference.size || end.size !== reference.size) problems.push(`final: ${equal} of ${reference.size} runs equal the clean sweep (${end.size} stored)`);
  const status = query<{ status: string }>(db, 'SELECT status FROM sweeps ORDER BY id DESC LIMIT 1')[0]?.status;
  if (status !== 'done') problems.push(`final: sweep status ${status}`);
  if (readCache(db).integrity !== 'ok') problems.push('final: integrity_check failed');

  // The report of the resumed sweep ranks exactly like the clean one.
  const strip = (json: string) => {
    const facts = JSON.parse(json) as { variants: unknown; best: unknown; runs: Record<string, unknown>[] };
    return JSON.stringify({ variants: facts.variants, best: facts.best, runs: facts.runs.map(({ train_seconds: _s, ...r }) => r) });
  };
  const [reportClean, reportResumed] = await Promise.all([
    runPipeline(cwd, ['report', '--db', 'clean.sqlite', '--json']),
    runPipeline(cwd, ['report', '--db', 'killed.sqlite', '--json']),
  ]);
  t.is(reportClean.code, 0, reportClean.stderr);
  t.is(reportResumed.code, 0, reportResumed.stderr);
  const sameReport = reportClean.code === 0 && reportResumed.code === 0 && strip(reportClean.stdout) === strip(reportResumed.stdout);
  if (!sameReport) problems.push('report --json of the resumed sweep differs from the clean one');

  t.log(`landed: ${JSON.stringify(landed)}; ${rounds} round(s); ${resumedRounds} resumes added runs to a partly finished sweep`);
  figures.add({
    case: '2.2 SIGKILL during sweep --resume',
    tries: KILLS,
    result:
      `${landed.betweenRuns} between stored runs, ${landed.beforeAnyRun} before a run was stored, ${landed.afterTheEnd} after the end (${rounds} rounds); ` +
      (problems.length
        ? `${problems.length} problems: ${problems[0]}`
        : `integrity ok after every kill; finished runs never retrained; final ${equal}/${reference.size} runs and the report equal a clean sweep`),
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});
