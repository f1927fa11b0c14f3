/**
 * SIGKILL `pipeline sweep --resume` in the middle of its work, again and again, resuming
 * after each. The sweep: 2 x 2 variants (hidden 0/128, learning rate 0.001/0.01) x 2
 * seeds, up to 30 epochs with early stopping, so runs finish at different moments. A clean
 * sweep first gives the reference runs and the moments they were stored. Each kill is
 * aimed from observed progress: a target number of stored runs strictly between what the
 * database held before and the total is drawn, sweep_runs is polled, and the process is
 * killed a random fraction of the clean sweep's mean gap between stores after the target
 * became visible. Only kills after which more runs than before and fewer than all are
 * stored count as mid-run; the test retries until at least MID_RUN_KILLS landed (at most
 * MAX_ATTEMPTS tries) and fails otherwise. Runs that finished are never retrained (their
 * stored rows, including finished_at, stay byte for byte), nothing committed is lost, the
 * database passes integrity_check after every kill, and the final stored runs and report
 * equal a clean sweep's (every column but the timings).
 */
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { query, readCache, rng, rowCount, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS, SWEEP_YAML } from '../helpers/fault-fixtures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const MID_RUN_KILLS = 5;
const MAX_ATTEMPTS = 20;
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


test.serial(`2.2 SIGKILL sweep --resume mid-run (at least ${MID_RUN_KILLS} times): finished runs never retrained, final runs equal a clean sweep`, async (t) => {
  const cwd = temp.dir;
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b', 'c', 'd'], perClass: 14, width: 48, height: 40, seed: 8000 });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 303 });
  writeFileSync(join(cwd, 'sweep.yaml'), SWEEP_YAML);
  const extract = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', 'features.sqlite']);
  t.is(extract.code, 0, extract.stderr);
  const sweepArgs = (db: string, resume: boolean) => ['sweep', '--config', 'sweep.yaml', '--db', db, ...(resume ? ['--resume'] : [])];

  copyFileSync(join(cwd, 'features.sqlite'), join(cwd, 'clean.sqlite'));
  const commits: number[] = [];
  const started = performance.now();
  let seen = 0;
  const watcher = setInterval(() => {
    const n = rowCount(join(cwd, 'clean.sqlite'), 'sweep_runs');
    for (; seen < n; seen++) commits.push(performance.now() - started);
  }, 10);
  const clean = await runPipeline(cwd, sweepArgs('clean.sqlite', false));
  clearInterval(watcher);
  t.is(clean.code, 0, clean.stderr);
  const reference = storedRuns(join(cwd, 'clean.sqlite'));
  const total = reference.size;
  t.is(total, 8);
  const gapMs = commits.length > 1 ? Math.max(20, (commits[commits.length - 1] - commits[0]) / (commits.length - 1)) : 200;
  t.log(`clean sweep: ${clean.ms.toFixed(0)} ms; runs stored at ${commits.map((c) => c.toFixed(0)).join(', ')} ms (mean gap ${gapMs.toFixed(0)} ms)`);

  const db = join(cwd, 'killed.sqlite');
  const fresh = () => {
    for (const suffix of ['', '-wal', '-shm']) rmSync(`${db}${suffix}`, { force: true });
    copyFileSync(join(cwd, 'features.sqlite'), db);
  };
  fresh();
  const random = rng(SEED);
  const problems: string[] = [];
  const landed = { midRun: 0, beforeAnyRun: 0, afterTheEnd: 0 };
  let attempts = 0;
  let rounds = 1;
  let known = new Map<string, { finishedAt: string; content: string }>();
  let resumedRounds = 0;
  while (landed.midRun < MID_RUN_KILLS && attempts < MAX_ATTEMPTS) {
    attempts++;
    const before = known.size;
    // A number of stored runs this sweep must reach but not finish at, and a moment after it.
    const target = before + 1 + Math.floor(random() * (total - 1 - before));
    const delay = Math.round(random() * gapMs);
    const run = await runPipeline(cwd, sweepArgs('killed.sqlite', true), { killAfterCondition: { check: () => rowCount(db, 'sweep_runs') >= target, delayMs: delay } });
    if (!run.killed && run.code !== 0) problems.push(`kill ${attempts}: exited ${run.code} by itself: ${run.stderr}`);
    const integrity = readCache(db).integrity;
    if (integrity !== 'ok') problems.push(`kill ${attempts}: integrity_check: ${integrity}`);
    const now = storedRuns(db);
    for (const [key, old] of known) {
      const current = now.get(key);
      if (!current) problems.push(`kill ${attempts}: finished run ${key} was lost`);
      else if (current.finishedAt !== old.finishedAt || current.content !== old.content) problems.push(`kill ${attempts}: finished run ${key} was retrained`);
    }
    for (const [key, row] of now) {
      if (reference.get(key)?.content !== row.content) problems.push(`kill ${attempts}: run ${key} differs from the clean sweep`);
    }
    const sweeps = query<{ n: number }>(db, 'SELECT COUNT(*) AS n FROM sweeps')[0].n;
    if (sweeps > 1) problems.push(`kill ${attempts}: ${sweeps} sweep rows; --resume should continue the one sweep`);
    const where = !run.killed || now.size === total ? 'afterTheEnd' : now.size > before ? 'midRun' : 'beforeAnyRun';
    landed[where]++;
    if (before > 0 && now.size > before) resumedRounds++;
    t.log(`kill ${attempts}: aimed at run ${target} + ${delay} ms; ${run.killed ? 'killed' : `exited ${run.code}`} after ${run.ms.toFixed(0)} ms; ${now.size} runs stored (${before} before): ${where}`);
    known = now;
    if (now.size >= total - 1 && landed.midRun < MID_RUN_KILLS) {
      // No stored run left to aim between: start again from the extracted features alone.
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

  if (landed.midRun < MID_RUN_KILLS) problems.push(`only ${landed.midRun} of ${attempts} kills landed mid-run (${MID_RUN_KILLS} required)`);
  if (resumedRounds === 0) problems.push('no resume continued a partly finished sweep');
  t.log(`landed: ${JSON.stringify(landed)} in ${attempts} attempts; ${rounds} round(s); ${resumedRounds} resumes added runs to a partly finished sweep`);
  figures.add({
    case: '2.2 SIGKILL during sweep --resume',
    tries: attempts,
    result:
      `aimed from stored runs; ${landed.midRun} landed between stored runs (${MID_RUN_KILLS} required), ${landed.beforeAnyRun} before the run's first store, ` +
      `${landed.afterTheEnd} after the end (${rounds} rounds, ${resumedRounds} resumes of a partly finished sweep); ` +
      (problems.length
        ? `${problems.length} problems: ${problems[0]}`
        : `integrity ok after every kill; finished runs never retrained; final ${equal}/${reference.size} runs and the report equal a clean sweep`),
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});
