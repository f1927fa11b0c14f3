/**
 * Many SIGKILLs on a real extraction over PostgreSQL: three `extract` processes share the
 * shards of a TrashNet slice (real MobileNetV2 weights); a driver kills workers in the
 * middle of the shard each one holds, at a random moment within the usual shard time, and
 * starts a fresh process in place of each. A killed worker loses only its shard, which
 * pg-boss hands to another once `--shard-timeout` has passed. At the end every shard is
 * committed exactly once and the features equal a SQLite run's byte for byte.
 *
 * Which process holds which shard is read from the store: a worker registers (its id
 * carries its pid) right before its first claim and claims its next shard right after each
 * commit, so the job that went active just after one of those moments is that worker's.
 * A wrong guess costs a kill that does not count: a kill counts only when the job it aimed at was still active and uncommitted after the
 * process was gone, and was later claimed again (its retry count went up).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test, { type ExecutionContext } from 'ava';
import { connectPostgres } from '../cache/postgres/connect.js';
import { runPipeline, trashnetSlice, type CliResult } from './helpers/cli.js';
import { type Cluster, freshDatabase, postgresSuite } from './helpers/postgres.js';
import { SHARED_DIR, SHARED_MODEL_035, SHARED_PRESENT, tempDir } from './helpers/shared.js';

const pg = postgresSuite();

/** 60 photos per class, 6 classes; 40 per shard: 9 shards. */
const PER_CLASS = 60;
const IMAGES = PER_CLASS * 6;
const SHARD_SIZE = 40;
/**
 * Seconds before a dead worker's shard is handed over (plus up to pg-boss' 10 s maintenance
 * interval). A live worker's shard takes 1-3 s here with three workers on two cores (its
 * model is loaded before its first claim), well inside it.
 */
const SHARD_TIMEOUT = 8;
const WORKERS = 3;
const KILLS = 10;
/** The driver stops aiming after this long, whatever it landed (then the workers finish). */
const KILL_PHASE_MS = 150_000;
/** Before any shard completed: a guess of one shard's seconds, to aim the first kills. */
const FIRST_GUESS_SECONDS = 1.5;
/** A worker claims its next shard within this many seconds of registering or committing. */
const CLAIM_WINDOW_SECONDS = 1;

/** At 224x224 a shard of 40 images lasts 1-3 s: long enough to aim inside, short enough for many. */
const extractArgs = (db: string) => ['extract', '--data', 'data', '--model', SHARED_MODEL_035, '--size', '224x224', '--backend', 'wasm', '--batch', '8', '--db', db];

const TITLE = `>= ${KILLS} workers SIGKILLed mid-shard over a TrashNet slice (${IMAGES} images): every shard committed once, features equal the SQLite run bitwise`;

if (SHARED_PRESENT) pg.serial(TITLE, killTest);
else test.skip(`${TITLE} (needs ../shared: ${SHARED_DIR} not found)`, () => {});

interface Worker {
  pid?: number;
  result?: CliResult;
  readonly done: Promise<CliResult>;
  /** We sent it SIGKILL. */
  killed: boolean;
  /** The job attempt it is to be killed in, and at what age of that attempt (seconds). */
  aim?: { readonly job: string; readonly retry: number; readonly startedOn: number; readonly atAge: number };
}

/** A kill whose job was still active and uncommitted once its worker was gone. */
interface Landed {
  readonly job: string;
  readonly shard: number;
  readonly retry: number;
  readonly ageSeconds: number;
  /** Seconds since the workers started. */
  readonly atSeconds: number;
}

async function killTest(t: ExecutionContext, cluster: Cluster): Promise<void> {
  t.timeout(360_000);
  const cwd = tempDir(t, 'pipeline-pg-kills-');
  await trashnetSlice(join(cwd, 'data'), PER_CLASS);

  const started = performance.now();
  const ref = await runPipeline(cwd, extractArgs('ref.sqlite'));
  t.is(ref.code, 0, `reference extract: ${ref.stderr}`);
  t.regex(ref.stdout, new RegExp(`^done: ${IMAGES} images, 0 already cached, ${IMAGES} extracted .*, 0 failed$`, 'm'));
  const refExport = await runPipeline(cwd, ['export-features', '--db', 'ref.sqlite', '--out', 'ref-features']);
  t.is(refExport.code, 0, refExport.stderr);
  const referenceMs = performance.now() - started;

  const url = freshDatabase(cluster, 'kills');
  const pool = await connectPostgres(url, { max: 2 });
  t.teardown(() => pool.end());
  /** Rows of `sql`, or none while the workers have not made the schemas and tables yet. */
  const rows = async <R>(sql: string, values: unknown[] = []): Promise<R[]> => {
    try {
      return (await pool.query(sql, values)).rows as R[];
    } catch (error) {
      if (['42P01', '3F000'].includes((error as { code?: string }).code ?? '')) return [];
      throw error;
    }
  };

  const args = [...extractArgs(url), '--shard-size', String(SHARD_SIZE), '--shard-timeout', String(SHARD_TIMEOUT)];
  const workers: Worker[] = [];
  const start = () => {
    let pid: number | undefined;
    const done = runPipeline(cwd, args, { onSpawn: (spawned) => (pid = spawned) });
    const worker: Worker = { pid, killed: false, done: done.then((r) => (worker.result = r)) };
    workers.push(worker);
  };
  const alive = () => workers.filter((w) => !w.result && !w.killed);
  /** SIGKILL, unless the process is gone already (it may have exited since the last look). */
  const kill = (w: Worker) => {
    try {
      return process.kill(w.pid!, 'SIGKILL');
    } catch {
      return false;
    }
  };
  // Whatever happens, no worker outlives the test.
  t.teardown(() => {
    for (const w of workers) if (!w.result && w.pid) kill(w);
  });

  const phaseStarted = performance.now();
  const landed: Landed[] = [];
  const missed: string[] = [];
  const checks: Promise<void>[] = [];
  for (let i = 0; i < WORKERS; i++) start();
  type Attempt = { job: string; retry: number; started_on: number; age: number };
  const key = (job: string, startedOn: number) => `${job}@${startedOn}`;
  for (;;) {
    if (performance.now() - phaseStarted > KILL_PHASE_MS) break;
    const [plan] = await rows<{ shards: number; done: number }>(
      'SELECT count(*)::int AS shards, count(completed_at)::int AS done FROM pipeline.extract_shards',
    );
    if (plan && plan.shards > 0 && plan.done === plan.shards) break; // all committed: nothing left to kill in
    // The kills so far: handed over (claimed again: the victim really held it), or refuted
    // (the attempt completed: another, live worker held it), or not decided yet.
    const sofar = [...landed]; // the checks of kills add to it meanwhile
    const fates = await rows<{ job: string; retry: number; state: string }>(
      'SELECT id AS job, retry_count AS retry, state::text FROM pgboss.job WHERE id = ANY($1::uuid[])',
      [sofar.map((k) => k.job)],
    );
    const fateOf = new Map(fates.map((f) => [f.job, f]));
    const handed = sofar.filter((k) => fateOf.get(k.job)!.retry > k.retry).length;
    const undecided = sofar.filter((k) => fateOf.get(k.job)!.retry === k.retry && fateOf.get(k.job)!.state !== 'completed').length;
    if (handed >= KILLS) break;
    const killing = handed + undecided < KILLS;
    // Each live worker: when it last registered or committed (its next claim follows at once).
    const events = await rows<{ worker: string; at: number }>(
      `SELECT w.worker, extract(epoch FROM greatest(w.started_at, max(s.completed_at)))::float8 AS at
       FROM pipeline.extract_workers w LEFT JOIN pipeline.extract_shards s ON s.completed_by = w.worker
       GROUP BY w.worker, w.started_at`,
    );
    // Active, uncommitted attempts; their age on the server's clock.
    const active = await rows<Attempt>(
      `SELECT j.id AS job, j.retry_count AS retry, extract(epoch FROM j.started_on)::float8 AS started_on,
              extract(epoch FROM now() - j.started_on)::float8 AS age
       FROM pipeline.extract_shards s JOIN pgboss.job j ON j.id = s.job_id
       WHERE j.state = 'active' AND s.completed_at IS NULL ORDER BY j.started_on`,
    );
    const [{ seconds } = { seconds: null }] = await rows<{ seconds: number | null }>(
      `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.completed_on - j.started_on))::float8 AS seconds
       FROM pipeline.extract_shards s JOIN pgboss.job j ON j.id = s.job_id WHERE j.state = 'completed'`,
    );
    const shardSeconds = seconds ?? FIRST_GUESS_SECONDS;
    const eventOf = new Map<number, number>();
    for (const e of events) eventOf.set(Number(e.worker.split('/').at(-2)), e.at);
    const live = alive();

    // Kill the worker whose aimed moment has come (one per look: the next look sees the new state).
    for (const worker of live.filter((w) => w.aim)) {
      const aim = worker.aim!;
      const attempt = active.find((a) => a.job === aim.job && a.started_on === aim.startedOn);
      if (!attempt) worker.aim = undefined; // it committed first: aim at its next shard
      else if (killing && attempt.age >= aim.atAge) {
        if (!kill(worker)) continue;
        worker.killed = true;
        const atSeconds = (performance.now() - phaseStarted) / 1000;
        checks.push(
          worker.done.then(async () => {
            // The process is gone: had it committed the shard, the commit would show now.
            const [after] = await rows<{ shard: number; state: string; retry: number; started_on: number; completed: boolean }>(
              `SELECT s.shard, j.state::text, j.retry_count AS retry, extract(epoch FROM j.started_on)::float8 AS started_on, s.completed_at IS NOT NULL AS completed
               FROM pipeline.extract_shards s JOIN pgboss.job j ON j.id = s.job_id WHERE j.id = $1`,
              [aim.job],
            );
            const inFlight = after && !after.completed && after.retry === aim.retry && after.started_on === aim.startedOn && after.state === 'active';
            if (inFlight) landed.push({ job: aim.job, shard: after.shard, retry: aim.retry, ageSeconds: attempt.age, atSeconds });
            else missed.push(`${aim.job}: ${JSON.stringify(after)}`);
          }),
        );
        start(); // a fresh process in its place
        break;
      }
    }

    // Tell apart the attempts nobody is aimed at yet (dead workers' stay aimed at until handed
    // over): each goes to the live worker whose registration or commit came last before it,
    // within the claim window. A wrong guess costs a kill that will not count, nothing more.
    const aimed = new Set(workers.filter((w) => w.aim).map((w) => key(w.aim!.job, w.aim!.startedOn)));
    const free = live.filter((w) => !w.killed && !w.aim && w.pid !== undefined && eventOf.has(w.pid));
    const aimAt = (worker: Worker, attempt: Attempt) => {
      // A random moment within the usual shard time, but not before this look.
      const atAge = Math.max(attempt.age, shardSeconds * (0.1 + 0.7 * Math.random()));
      worker.aim = { job: attempt.job, retry: attempt.retry, startedOn: attempt.started_on, atAge };
      aimed.add(key(attempt.job, attempt.started_on));
      free.splice(free.indexOf(worker), 1);
    };
    for (const attempt of active.filter((a) => !aimed.has(key(a.job, a.started_on)))) {
      const candidates = free.filter((w) => {
        const at = eventOf.get(w.pid!)!;
        return attempt.started_on >= at - 0.05 && attempt.started_on <= at + CLAIM_WINDOW_SECONDS;
      });
      candidates.sort((a, b) => eventOf.get(b.pid!)! - eventOf.get(a.pid!)!);
      if (candidates.length) aimAt(candidates[0], attempt);
    }
    // A worker that found no shard waiting claims one later, at no moment of its own: when
    // it is the only live worker not told apart and one active attempt is nobody's, that is it.
    const nobodys = active.filter((a) => !aimed.has(key(a.job, a.started_on)));
    if (free.length === 1 && nobodys.length === 1 && nobodys[0].started_on >= eventOf.get(free[0].pid!)!) aimAt(free[0], nobodys[0]);
    await sleep(50);
  }
  const killPhaseMs = performance.now() - phaseStarted;
  // The last generation: left alone, every one of them finishes the work and exits 0.
  for (const w of workers) w.aim = undefined;
  await Promise.all(workers.map((w) => w.done));
  await Promise.all(checks);
  const wallMs = performance.now() - phaseStarted;

  for (const [i, w] of workers.entries()) {
    const r = w.result!;
    if (w.killed) t.is(r.signal, 'SIGKILL', `worker ${i + 1} was killed by us: ${r.code} ${r.signal}\n${r.stderr}`);
    else t.is(r.code, 0, `worker ${i + 1} exited ${r.code} (${r.signal ?? 'no signal'}):\n${r.stderr}`);
  }
  const survivors = workers.filter((w) => !w.killed);
  t.true(survivors.length >= WORKERS, `${survivors.length} workers ran to the end`);
  for (const w of survivors) t.regex(w.result!.stdout, /^cluster: 9\/9 shards done \(\d+ by this worker\), 0 running, 0 waiting, 0 failed;/m);

  // Every shard committed, once: one row per image, the vectors written add up to the images.
  const [state] = await rows<{ shards: number; open: number; images: number; written: number; vectors: number; dup: number }>(
    `SELECT (SELECT count(*)::int FROM pipeline.extract_shards) AS shards,
            (SELECT count(*)::int FROM pipeline.extract_shards WHERE completed_at IS NULL) AS open,
            (SELECT sum(images)::int FROM pipeline.extract_shards) AS images,
            (SELECT sum(vectors_written)::int FROM pipeline.extract_shards) AS written,
            (SELECT count(*)::int FROM pipeline.features) AS vectors,
            (SELECT count(*)::int FROM (SELECT 1 FROM pipeline.features GROUP BY feature_set, sha256, view HAVING count(*) > 1) d) AS dup`,
  );
  t.deepEqual(state, { shards: 9, open: 0, images: IMAGES, written: IMAGES, vectors: IMAGES, dup: 0 });

  // The queue: every job completed; the kills' shards were handed over (claimed again);
  // no live worker's shard ran past the timeout (that would hand over a shard no kill explains).
  const jobs = await rows<{ id: string; state: string; retry: number; seconds: number }>(
    `SELECT j.id, j.state::text, j.retry_count AS retry, extract(epoch FROM j.completed_on - j.started_on)::float8 AS seconds
     FROM pipeline.extract_shards s JOIN pgboss.job j ON j.id = s.job_id`,
  );
  t.deepEqual(jobs.map((j) => j.state), Array(9).fill('completed'));
  const retryOf = new Map(jobs.map((j) => [j.id, j.retry]));
  const attempts = new Set(landed.filter((k) => retryOf.get(k.job)! > k.retry).map((k) => `${k.job}/${k.retry}`));
  const handedOver = jobs.filter((j) => j.retry > 0).length;
  const retries = jobs.reduce((n, j) => n + j.retry, 0);
  const longest = Math.max(...jobs.map((j) => j.seconds));
  t.log(
    `${workers.filter((w) => w.killed).length} SIGKILLs sent, ${landed.length} landed mid-shard (${attempts.size} distinct attempts claimed again afterwards), ${missed.length} missed (shard committed first)`,
  );
  t.log(`kills (s since start: shard, age of its attempt): ${landed.map((k) => `${k.atSeconds.toFixed(1)}: ${k.shard}, ${k.ageSeconds.toFixed(1)}`).join('; ')}`);
  t.log(`${handedOver} of 9 shards handed over, ${retries} hand-overs in all (${retries - attempts.size} not from a counted kill); longest committed attempt ${longest.toFixed(1)} s (timeout ${SHARD_TIMEOUT} s)`);
  t.log(`${workers.length} processes; reference (SQLite extract + export) ${(referenceMs / 1000).toFixed(1)} s, kill phase ${(killPhaseMs / 1000).toFixed(1)} s, PostgreSQL run to the last exit ${(wallMs / 1000).toFixed(1)} s`);
  t.true(attempts.size >= KILLS, `only ${attempts.size} kills landed mid-shard and were handed over`);
  t.true(handedOver >= 1, 'no shard was handed over');
  // Every hand-over is a dead worker's shard: no live worker's shard outlasted the timeout
  // (the first shard of a process once did, when the model loaded after the claim).
  const sent = workers.filter((w) => w.killed).length;
  t.true(retries <= sent, `${retries} hand-overs but ${sent} kills: a live worker's shard was handed over`);

  const pgExport = await runPipeline(cwd, ['export-features', '--db', url, '--out', 'pg-features']);
  t.is(pgExport.code, 0, pgExport.stderr);
  for (const file of ['features.npy', 'index.csv']) {
    t.true((await readFile(join(cwd, 'pg-features', file))).equals(await readFile(join(cwd, 'ref-features', file))), `${file} differs from the SQLite run's`);
  }
}
