/**
 * Fault cases 3.x (README, "Fault injection"): two `pipeline extract` processes on the same SQLite file at once (started
 * together, and staggered) finish without errors, corruption or duplicate rows, with the
 * clean run's numbers; and `pipeline report` run again and again during a sweep always
 * reads a consistent state (a snapshot of finished runs, equal to the final ones).
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { type CliResult, errorLines, query, readCache, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS, SWEEP_YAML } from '../helpers/fault-fixtures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const figures = new Figures('concurrency');
const temp = fileTempDir('pipeline-fault-concurrency-');
let modelJson: string;
test.before(async () => {
  await makeDataset(join(temp.dir, 'data'), { classes: ['a', 'b', 'c', 'd'], perClass: 12, width: 48, height: 40, seed: 9000, corrupt: true });
  ({ modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, seed: 404 }));
});
test.after.always(async () => {
  figures.write();
  await temp.remove();
});

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Reports during the sweep that must show a consistent snapshot, and how many of them mid-sweep (some runs stored, not all). */
const MIN_SNAPSHOTS = 3;
const MIN_PARTIAL = 1;
const extractArgs = (db: string) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db];

test.serial('3.1 two extracts on the same database at once: no errors, no corruption, no duplicates', async (t) => {
  const cwd = temp.dir;
  const clean = await runPipeline(cwd, extractArgs('clean.sqlite'));
  t.is(clean.code, 0, clean.stderr);
  const reference = readCache(join(cwd, 'clean.sqlite'));
  const staggers = [0, 250, 700];
  const problems: string[] = [];
  for (const [i, stagger] of staggers.entries()) {
    const db = `pair-${i}.sqlite`;
    const [first, second] = await Promise.all([runPipeline(cwd, extractArgs(db)), delay(stagger).then(() => runPipeline(cwd, extractArgs(db)))]);
    for (const [name, run] of [
      ['first', first],
      ['second', second],
    ] as const) {
      if (run.code !== 0 || errorLines(run).length > 0) problems.push(`stagger ${stagger} ms, ${name}: exit ${run.code}: ${errorLines(run)[0] ?? run.stderr}`);
    }
    const state = readCache(join(cwd, db));
    if (state.integrity !== 'ok') problems.push(`stagger ${stagger} ms: integrity_check: ${state.integrity}`);
    if (state.featureRows !== reference.featureRows || state.featureRows !== state.distinctFeatures) {
      problems.push(`stagger ${stagger} ms: ${state.featureRows} rows (${state.distinctFeatures} distinct), expected ${reference.featureRows}`);
    }
    for (const [hash, vector] of reference.features) {
      if (!state.features.get(hash)?.equals(vector)) problems.push(`stagger ${stagger} ms: row ${hash} missing or different`);
    }
    if (state.items.length !== reference.items.length) problems.push(`stagger ${stagger} ms: ${state.items.length} items listed`);
    if (state.failures.size !== reference.failures.size) problems.push(`stagger ${stagger} ms: ${state.failures.size} failures recorded`);
    const runs = query<{ status: string }>(join(cwd, db), 'SELECT status FROM extract_runs');
    if (runs.length !== 2 || runs.some((r) => r.status !== 'done')) problems.push(`stagger ${stagger} ms: extract_runs ${JSON.stringify(runs)}`);
    const extracted = [first, second].map((r) => Number(/ (\d+) extracted in /.exec(r.stdout)?.[1] ?? NaN));
    t.log(`stagger ${stagger} ms: extracted ${extracted.join(' + ')} (of ${reference.featureRows}), ${first.ms.toFixed(0)} / ${second.ms.toFixed(0)} ms`);
  }
  figures.add({
    case: '3.1 two extracts on one database at once',
    tries: staggers.length,
    result: problems.length
      ? `${problems.length} problems: ${problems[0]}`
      : `started 0 / 250 / 700 ms apart: both exit 0 every time, integrity ok, ${reference.featureRows} rows, no duplicates, bitwise equal to a single run`,
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});

test.serial('3.2 pipeline report during a sweep reads a consistent state', async (t) => {
  const cwd = temp.dir;
  // Without early stopping and with many epochs, so that several reports run during the sweep even on a fast machine.
  writeFileSync(join(cwd, 'sweep.yaml'), SWEEP_YAML.replace('patience: 4', 'patience: 0').replace('epochs: {value: 30}', 'epochs: {value: 150}'));
  copyFileSync(join(cwd, 'clean.sqlite'), join(cwd, 'sweep.sqlite'));
  let sweepDone = false;
  const sweep = runPipeline(cwd, ['sweep', '--config', 'sweep.yaml', '--db', 'sweep.sqlite']).finally(() => (sweepDone = true));
  const reports: CliResult[] = [];
  while (!sweepDone) {
    reports.push(await runPipeline(cwd, ['report', '--db', 'sweep.sqlite', '--json']));
    await delay(250); // leave the sweep most of the two cores

  }
  const swept = await sweep;
  t.is(swept.code, 0, swept.stderr);
  const final = await runPipeline(cwd, ['report', '--db', 'sweep.sqlite', '--json']);
  t.is(final.code, 0, final.stderr);
  type Run = Record<string, unknown> & { run_key: string };
  type Facts = { sweep: { planned_runs: number; finished_runs: number; status: string }; runs: Run[]; variants: { seeds: number[] }[] };
  const finalRuns = new Map((JSON.parse(final.stdout) as Facts).runs.map(({ train_seconds: _s, ...r }) => [r.run_key, JSON.stringify(r)]));

  const problems: string[] = [];
  const outcomes = { snapshot: 0, notYet: 0 };
  const finishedSeen: number[] = [];
  for (const [i, report] of reports.entries()) {
    if (report.code === 1 && errorLines(report).length === 1 && /no sweep yet|no finished runs yet/.test(errorLines(report)[0])) {
      outcomes.notYet++;
      continue;
    }
    if (report.code !== 0) {
      problems.push(`report ${i + 1}: exit ${report.code}: ${errorLines(report)[0] ?? report.stderr}`);
      continue;
    }
    const facts = JSON.parse(report.stdout) as Facts;
    outcomes.snapshot++;
    finishedSeen.push(facts.runs.length);
    if (facts.sweep.finished_runs !== facts.runs.length) problems.push(`report ${i + 1}: finished_runs ${facts.sweep.finished_runs} but ${facts.runs.length} runs`);
    if (facts.sweep.planned_runs !== 8) problems.push(`report ${i + 1}: planned_runs ${facts.sweep.planned_runs}`);
    const seeds = facts.variants.reduce((n, v) => n + v.seeds.length, 0);
    if (seeds !== facts.runs.length) problems.push(`report ${i + 1}: variants hold ${seeds} seeds for ${facts.runs.length} runs`);
    for (const { train_seconds: _s, ...run } of facts.runs) {
      if (finalRuns.get(run.run_key) !== JSON.stringify(run)) problems.push(`report ${i + 1}: run ${run.run_key} differs from the final one`);
    }
  }
  const partial = finishedSeen.filter((n) => n > 0 && n < 8).length;
  if (outcomes.snapshot < MIN_SNAPSHOTS) problems.push(`only ${outcomes.snapshot} consistent snapshots (${MIN_SNAPSHOTS} required)`);
  if (partial < MIN_PARTIAL) problems.push(`only ${partial} snapshots taken mid-sweep (${MIN_PARTIAL} required)`);
  t.log(`${reports.length} reports during the sweep: ${outcomes.snapshot} snapshots (finished runs seen: ${finishedSeen.join(', ')}), ${outcomes.notYet} "not yet"`);
  figures.add({
    case: '3.2 report during a sweep',
    tries: reports.length,
    result: problems.length
      ? `${problems.length} problems: ${problems[0]}`
      : `${outcomes.snapshot} consistent snapshots (${MIN_SNAPSHOTS} required; ${[...new Set(finishedSeen)].join('/')} of 8 runs, ${partial} mid-sweep), ${outcomes.notYet} clear "no finished runs yet"; no lock errors`,
    held: problems.length === 0 && outcomes.snapshot + outcomes.notYet === reports.length,
  });
  t.deepEqual(problems, []);
});
