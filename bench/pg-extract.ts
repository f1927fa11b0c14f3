/**
 * `npm run bench -- pg-extract`: what the PostgreSQL store and its shard queue cost the
 * extract, and whether a sweep over a large server store is dominated by loading.
 *
 * 1. Extract throughput of the real CLI (bin/pipeline.js, spawned) with the real weights on a
 *    TrashNet slice: one process on a fresh SQLite file (the reference), and 1, 2 and 3
 *    processes started together on a fresh PostgreSQL database each, all with the same flags.
 *    ROUNDS rounds in rotated order; medians, every run, and the ratios PG-N / SQLite-1.
 * 2. Sweep load vs training: VECTORS generated 1280-d vectors in a PostgreSQL feature set,
 *    loaded by the sweep's own load path (loadSweepData) and by the store's bulk read alone,
 *    then a small sweep (linear head, few epochs) trained on them; SQLite's load beside it.
 *
 * The server is a throwaway local cluster with fsync on, or PIPELINE_BENCH_PG (a postgres://
 * URL of a role that may create databases: each run gets its own, dropped afterwards).
 *
 * BENCH_IMAGES=N TrashNet photos per class folder (default 200: 1,200 photos, so that a run lasts
 *   long enough for the steady-state window below; with 50 the start-up of N processes is most of it);
 * BENCH_ROUNDS=N rounds (default 3); BENCH_SHARD_SIZE=N images per shard (default 100: 12 shards, 4 each for 3 workers);
 * BENCH_VECTORS=N vectors of the sweep section (default 100000; 0 skips it);
 * BENCH_TARGETS=PG-1,PG-3 runs only those beside SQLite-1 (default: PG-1, PG-2 and PG-3).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore, type Store } from '../cache/store.js';
import { sha256 } from '../data/hash.js';
import { connectPostgres } from '../cache/postgres/connect.js';
import { loadSweepData } from '../stages/sweep.js';
import { SweepSchema } from '../stages/sweep/config.js';
import { headParams, planRuns } from '../stages/sweep/plan.js';
import { trainHeads } from '../stages/sweep/trainer.js';
import { type Cluster, postgresUnavailable, startCluster } from '../test/helpers/postgres-cluster.js';
import { DATASET, MODEL, datasetSlice } from './extract.js';
import { median, timed } from './machine.js';
import { BENCH_FEATURE_SET } from './pg-store.js';

const CLI = fileURLToPath(new URL('../../bin/pipeline.js', import.meta.url));
const PER_CLASS = Number(process.env.BENCH_IMAGES ?? 200);
/** At least 2: the sweep section reports its first load apart. */
const ROUNDS = Math.max(2, Number(process.env.BENCH_ROUNDS ?? 3));
const SHARD_SIZE = Number(process.env.BENCH_SHARD_SIZE ?? 100);
const VECTORS = Number(process.env.BENCH_VECTORS ?? 100_000);
const WORKER_COUNTS = [1, 2, 3];
/** Identical for every run; batch and concurrency are the extract defaults (pipeline/config.ts). */
const FLAGS = ['--size', '224x224', '--backend', 'onnx', '--batch', '8', '--concurrency', '4'];

const BACKEND_NOTE =
  'backend onnx for every run (auto picks it here: libtensorflow is not installed). `pipeline extract` has no thread flag: ' +
  'each process runs one single-threaded ORT session per core (2 here), so N processes run 2N sessions on 2 cores. ' +
  'Single-threaded sessions have no per-op barrier for a descheduled thread to stall, so oversubscribing only shares the ' +
  'cores\' time; a multi-threaded session per process would stall at every op. Batch 8, 4 decodes at once (the defaults).';

interface Target {
  readonly name: string;
  readonly store: 'sqlite' | 'postgres';
  readonly processes: number;
}

const ALL_TARGETS: Target[] = [
  { name: 'SQLite-1', store: 'sqlite', processes: 1 },
  ...WORKER_COUNTS.map((n): Target => ({ name: `PG-${n}`, store: 'postgres', processes: n })),
];
/** SQLite-1, the reference, always runs. */
const TARGETS = process.env.BENCH_TARGETS
  ? ALL_TARGETS.filter((t) => t.name === 'SQLite-1' || process.env.BENCH_TARGETS!.split(',').includes(t.name))
  : ALL_TARGETS;

interface ProcessReport {
  readonly extracted: number;
  /** The process's own `extracted in S s`: from after scanning and hashing to the end, engine start-up included. */
  readonly seconds: number;
  /** Seconds from spawn to exit. */
  readonly wall: number;
}

interface RunResult {
  /** Distinct photos extracted (byte-identical ones count once). */
  readonly images: number;
  /** Spawn of the first process to exit of the last. */
  readonly wall: number;
  readonly processes: ProcessReport[];
  /** Progress lines: [seconds since spawn, images done] (all workers' images on PostgreSQL). */
  readonly progress: Array<[number, number]>;
}

const rates = (r: RunResult) => ({
  wall: r.images / r.wall,
  // The processes' own clocks, together: all vectors over the longest own time.
  own: r.processes.reduce((n, p) => n + p.extracted, 0) / Math.max(...r.processes.map((p) => p.seconds)),
  steady: steadyRate(r.progress),
});

/**
 * Images/s between the first and the last progress line of the run (all processes' lines
 * together). A process prints its first line at least 5 s after its extraction began and
 * only once a batch (SQLite) or a shard (PostgreSQL) is done, so the window leaves out
 * process start, scan, hashing and model load; it ends at the line that reports every
 * image done. Undefined with fewer than two lines (a run shorter than ~5 s). With N > 1
 * workers it can read high: the other workers' half-done shards at the window's start are
 * not in its first count but are in its last (at most N - 1 shards).
 */
function steadyRate(progress: ReadonlyArray<[number, number]>): number | undefined {
  if (progress.length < 2) return undefined;
  const sorted = [...progress].sort((a, b) => a[0] - b[0]);
  const [t0, d0] = sorted[0];
  const end = sorted.reduce((best, p) => (p[1] > best[1] ? p : best));
  return end[0] > t0 && end[1] > d0 ? (end[1] - d0) / (end[0] - t0) : undefined;
}

const PROGRESS = /^extract .*?(\d+)\/(\d+) \(/;
const DONE = /^done: (\d+) images, \d+ already cached, (\d+) extracted in ([\d.]+) s/;

/** One `pipeline extract` process; resolves with its report, rejects with its stderr when it fails. */
function extractProcess(db: string, data: string, cwd: string, spawned: number, progress: Array<[number, number]>): Promise<ProcessReport & { images: number }> {
  const shards = db.startsWith('postgres') ? ['--shard-size', String(SHARD_SIZE)] : [];
  const args = [CLI, 'extract', '--db', db, '--data', data, '--model', MODEL, ...FLAGS, ...shards];
  const child: ChildProcess = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let partial = '';
  const onData = (chunk: Buffer) => {
    const at = (performance.now() - spawned) / 1000;
    output += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      const match = PROGRESS.exec(line);
      if (match) progress.push([at, Number(match[1])]);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      const wall = (performance.now() - spawned) / 1000;
      const done = output.split('\n').map((line) => DONE.exec(line)).find(Boolean);
      if (code !== 0 || !done) {
        reject(new Error(`pipeline extract exited ${code}:\n${output.split('\n').slice(-8).join('\n')}`));
        return;
      }
      resolve({ images: Number(done[1]), extracted: Number(done[2]), seconds: Number(done[3]), wall });
    });
  });
}

async function runTarget(target: Target, db: string, data: string, cwd: string): Promise<RunResult> {
  const progress: Array<[number, number]> = [];
  const spawned = performance.now();
  const reports = await Promise.all(Array.from({ length: target.processes }, () => extractProcess(db, data, cwd, spawned, progress)));
  const wall = (performance.now() - spawned) / 1000;
  const extracted = reports.reduce((n, r) => n + r.extracted, 0);
  // Byte-identical photos are extracted once, so the vectors may be fewer than the photos, never more.
  if (extracted === 0 || extracted > reports[0].images) throw new Error(`${target.name}: ${extracted} vectors extracted for ${reports[0].images} images`);
  return { images: extracted, wall, processes: reports, progress };
}

/** A fresh database per run: on the throwaway cluster, or created through PIPELINE_BENCH_PG. */
interface Server {
  readonly description: string;
  fresh(name: string): Promise<string>;
  drop(name: string): Promise<void>;
  stop(): Promise<void>;
}

async function startServer(): Promise<Server | string> {
  const given = process.env.PIPELINE_BENCH_PG;
  if (given) {
    const admin = await connectPostgres(given);
    const urlOf = (name: string) => {
      const url = new URL(given);
      url.pathname = `/${name}`;
      return url.toString();
    };
    return {
      description: 'PIPELINE_BENCH_PG',
      async fresh(name) {
        await admin.query(`CREATE DATABASE "${name}"`);
        return urlOf(name);
      },
      async drop(name) {
        await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      },
      stop: () => admin.end(),
    };
  }
  const unavailable = postgresUnavailable();
  if (unavailable) return `${unavailable}; or set PIPELINE_BENCH_PG=postgres://...`;
  const cluster: Cluster = await startCluster({ durable: true });
  return {
    description: 'local throwaway cluster, fsync on, on the same 2 cores',
    fresh: async (name) => cluster.createDatabase(name),
    drop: async (name) => void cluster.psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`),
    stop: async () => cluster.stop(),
  };
}

const loads = () => loadavg().map((l) => l.toFixed(2)).join(' ');
const f1 = (v: number | undefined) => (v === undefined ? 'n/a' : v.toFixed(1));
const list = (values: Array<number | undefined>) => values.map(f1).join(', ');
const defined = (values: Array<number | undefined>) => values.filter((v): v is number => v !== undefined);
const medianOf = (values: Array<number | undefined>) => (defined(values).length ? median(defined(values)) : undefined);

export async function run(): Promise<void> {
  console.log(`load average at start: ${loads()}`);
  const server = await startServer();
  if (typeof server === 'string') {
    console.log(`skipped: ${server}`);
    return;
  }
  const work = await mkdtemp(join(tmpdir(), 'pipeline-bench-pg-extract-'));
  try {
    console.log(`server: ${server.description}`);
    if (existsSync(DATASET) && existsSync(MODEL)) await extractSection(server, work);
    else console.log(`extract section skipped: ${DATASET} or ${MODEL} not found`);
    if (VECTORS > 0) await sweepSection(server, work);
  } finally {
    await server.stop();
    await rm(work, { recursive: true, force: true });
    console.log(`load average at end: ${loads()}`);
  }
}

async function extractSection(server: Server, work: string): Promise<void> {
  const data = await datasetSlice(work, PER_CLASS);
  const results = new Map<string, RunResult[]>(TARGETS.map((t) => [t.name, []]));
  console.log(`\n-- extract: up to ${PER_CLASS} TrashNet photos per class, MobileNetV2 1.0 224x224; flags: ${FLAGS.join(' ')}, and --shard-size ${SHARD_SIZE} on PostgreSQL; ${ROUNDS} rounds, order rotated each round`);
  console.log(BACKEND_NOTE);
  console.log(
    'images/s three ways: wall = images / (spawn of the first process to exit of the last: node start, imports, scan, hashing, ' +
      'model load, engine start and store set-up included); own = all vectors / the longest of the processes\' own `extracted in S s` ' +
      '(from after hashing to the end: engine start-up included, process start, scan and hashing not); steady = images done between ' +
      'the first and the last progress line of the run (timestamped as the bench reads them, all processes together; the first ' +
      'comes >= 5 s into extraction and after a batch or shard is stored, so start-up is outside the window; with N > 1 workers it counts work done before the window in up to N - 1 shards, so it can read high). ' +
      '`wall - images/steady` is derived, not measured: the wall time beyond what the images take at the steady rate (start-up, mostly).',
  );
  let serial = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const order = TARGETS.map((_, i) => TARGETS[(i + round) % TARGETS.length]);
    for (const target of order) {
      const name = `bench_${process.pid}_${serial++}`;
      const db = target.store === 'sqlite' ? join(work, `${name}.sqlite`) : await server.fresh(name);
      try {
        const result = await runTarget(target, db, data, work);
        const first = [...results.values()].flat()[0];
        if (first && first.images !== result.images) throw new Error(`${target.name}: ${result.images} vectors extracted, ${first.images} in the first run`);
        results.get(target.name)!.push(result);
        const r = rates(result);
        // What the steady rate leaves out, derived: the wall time the images would not need at that rate.
        const outside = r.steady === undefined ? 'n/a' : `${(result.wall - result.images / r.steady).toFixed(1)} s`;
        console.log(
          `  round ${round + 1} ${target.name.padEnd(8)} ${result.images} images: wall ${result.wall.toFixed(1)} s = ${f1(r.wall)}, own ${f1(r.own)}, steady ${f1(r.steady)} images/s ` +
            `(wall - images/steady: ${outside}); ` +
            `processes (vectors in own s / spawn-to-exit s): ${result.processes.map((p) => `${p.extracted} in ${p.seconds.toFixed(1)} / ${p.wall.toFixed(1)}`).join(', ')}`,
        );
      } finally {
        if (target.store === 'sqlite') await rm(db, { force: true });
        else await server.drop(name);
      }
    }
  }
  const reference = results.get('SQLite-1')!.map(rates);
  const base = { wall: median(reference.map((r) => r.wall)), own: median(reference.map((r) => r.own)), steady: medianOf(reference.map((r) => r.steady)) };
  console.log('medians, images/s (runs), and ratio of medians to SQLite-1:');
  for (const target of TARGETS) {
    const rs = results.get(target.name)!.map(rates);
    const wall = median(rs.map((r) => r.wall));
    const own = median(rs.map((r) => r.own));
    const steady = medianOf(rs.map((r) => r.steady));
    const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? 'n/a' : `${(a / b).toFixed(2)}x`);
    console.log(
      `  ${target.name.padEnd(8)} wall ${f1(wall)} (${list(rs.map((r) => r.wall))}) ${ratio(wall, base.wall)}; ` +
        `own ${f1(own)} (${list(rs.map((r) => r.own))}) ${ratio(own, base.own)}; steady ${f1(steady)} (${list(rs.map((r) => r.steady))}) ${ratio(steady, base.steady)}`,
    );
  }
}

const CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash'];
const WRITE_BATCH = 1000;
/** The small sweep trained on the loaded vectors: linear head, 2 learning rates, 5 epochs, no early stop. */
const SMALL_SWEEP = SweepSchema.parse({
  seeds: [1],
  early_stopping: { monitor: 'val_loss', patience: 0 },
  parameters: { dropout: { value: 0 }, learning_rate: { values: [0.001, 0.003] }, epochs: { value: 5 }, batch_size: { value: 128 } },
});

/**
 * VECTORS labelled vectors of 6 classes: a class centre plus uniform noise (nonnegative,
 * like pooled ReLU6 features; centres close enough that a linear head does not reach 100%), from a seeded xorshift so every store gets the same bytes.
 */
async function fillStore(store: Store, id: string): Promise<void> {
  await store.ensureFeatureSet({ ...BENCH_FEATURE_SET, id });
  const items = Array.from({ length: VECTORS }, (_, i) => {
    const label = CLASSES[i % CLASSES.length];
    return { path: `${label}/${String(i).padStart(6, '0')}.jpg`, label, split: null, sha256: sha256(`bench-vector-${i}`) };
  });
  await store.replaceItems(id, items);
  const centres = CLASSES.map((_, c) => Float32Array.from({ length: 1280 }, (_, j) => 0.45 + 0.12 * (((c * 7919 + j * 104729) % 1000) / 1000)));
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  for (let at = 0; at < VECTORS; at += WRITE_BATCH) {
    const features = items.slice(at, at + WRITE_BATCH).map((item, k) => {
      const centre = centres[(at + k) % CLASSES.length];
      const vector = new Float32Array(1280);
      for (let j = 0; j < 1280; j++) vector[j] = Math.max(0, centre[j] + 1.2 * (next() - 0.5));
      return { sha256: item.sha256, vector };
    });
    await store.saveBatch(id, { features, failures: [] });
  }
}

async function sweepSection(server: Server, work: string): Promise<void> {
  const runs = planRuns(SMALL_SWEEP).map((run) => ({ key: run.runKey, seed: run.seed, params: headParams(run) }));
  console.log(
    `\n-- sweep load vs training: ${VECTORS.toLocaleString('en-US')} generated 1280-d vectors (6 classes), ${ROUNDS} rounds; ` +
      `sweep: ${runs.length} runs, linear head, 5 epochs, batch 128, adam, no early stop, trained by the sweep trainer (one worker thread per run, 2 cores)`,
  );
  const id = 'bench-sweep-load';
  const pgName = `bench_${process.pid}_sweep`;
  const stores: Array<{ name: string; location: string }> = [
    { name: 'PostgreSQL', location: await server.fresh(pgName) },
    { name: 'SQLite', location: join(work, 'sweep-load.sqlite') },
  ];
  const log = () => {};
  try {
    const timings = new Map<string, { fill: number; bulk: number[]; sweepLoad: number[] }>();
    const train: number[] = [];
    for (const { name, location } of stores) {
      const store = await openStore(location);
      try {
        const fill = (await timed(() => fillStore(store, id))).seconds;
        const set = (await store.getFeatureSet(id))!;
        const hashes = (await store.listItems(id)).map((item) => item.sha256);
        const bulk: number[] = [];
        const sweepLoad: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          const read = await timed(() => store.loadVectors(id, hashes));
          if (read.result.size !== VECTORS) throw new Error(`${name}: read ${read.result.size} of ${VECTORS} vectors`);
          bulk.push(read.seconds);
          const loaded = await timed(() => loadSweepData(store, set, log));
          sweepLoad.push(loaded.seconds);
          // The heads train on what PostgreSQL gave; the SQLite copy holds the same bytes.
          if (name === 'PostgreSQL') {
            const trained = await timed(() => trainHeads(loaded.result, runs, SMALL_SWEEP.early_stopping));
            train.push(trained.seconds);
            if (round === 0) {
              const accuracy = trained.result.map((r) => `${(100 * r.val.accuracy).toFixed(1)}%`).join(', ');
              console.log(`  ${loaded.result.train.y.length}/${loaded.result.val.y.length}/${loaded.result.test.y.length} train/val/test rows; val accuracy ${accuracy}`);
            }
          }
        }
        timings.set(name, { fill, bulk, sweepLoad });
      } finally {
        await store.close();
      }
    }
    const s = (values: number[]) => `${median(values).toFixed(2)} s (${values.map((v) => v.toFixed(2)).join(', ')})`;
    for (const [name, t] of timings) {
      console.log(
        `  ${name.padEnd(10)} generate + write (batches of ${WRITE_BATCH}, once) ${t.fill.toFixed(1)} s; bulk read store.loadVectors ${s(t.bulk)}; ` +
          `sweep load path loadSweepData: first ${t.sweepLoad[0].toFixed(2)} s (it also makes and stores the split), then ${s(t.sweepLoad.slice(1))}`,
      );
    }
    const pg = timings.get('PostgreSQL')!;
    // A sweep's load once its split is stored (every sweep but the first on a feature set).
    const load = median(pg.sweepLoad.slice(1));
    const training = median(train);
    console.log(`  training the ${runs.length} runs on the vectors from PostgreSQL: ${s(train)}`);
    console.log(
      `  PostgreSQL sweep load / training: ${(load / training).toFixed(2)}x (load is ${((100 * load) / (load + training)).toFixed(0)}% of load + training; ` +
        `the first load, split included: ${(pg.sweepLoad[0] / training).toFixed(2)}x); ` +
        `PostgreSQL / SQLite sweep load ${(load / median(timings.get('SQLite')!.sweepLoad.slice(1))).toFixed(2)}x (both without the first load)`,
    );
  } finally {
    await server.drop(pgName);
  }
}
