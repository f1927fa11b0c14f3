/**
 * Extraction spread over many processes or machines through pg-boss (major 10, the last
 * that runs on Node 20). The images to extract are cut into shards once per listing (the
 * plan); each shard is a pg-boss job. A worker claims a job, computes the shard's vectors,
 * and commits the vectors, the shard's completion record AND the job's completion in ONE
 * transaction: a worker killed at any moment leaves either all of its shard or none of it.
 *
 * pg-boss 10 has no heartbeat: a claimed job that is not completed within the queue's
 * `expireInSeconds` is put back (pg-boss' maintenance, every `maintenanceIntervalSeconds`)
 * and another worker takes it. Expiry must therefore exceed the time one shard takes. A
 * worker that was only slow, not dead, may finish a shard someone else redoes: its rows
 * are inserted unless present, so the result is the same rows, never duplicates.
 */
import PgBoss from 'pg-boss';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../../core/errors.js';
import type { BatchResult } from '../features.js';
import type { ShardProgress } from '../store-types.js';
import type { PgClient, PgPool } from './connect.js';
import { writeBatch } from './features.js';
import { SCHEMA } from './schema.js';
import { inTransaction, underSessionLock } from './transaction.js';

export interface ShardItem {
  readonly path: string;
  readonly sha256: string;
}

/** A job's data: everything a worker needs to extract one shard. */
export interface ShardJob {
  readonly featureSet: string;
  readonly plan: string;
  readonly shard: number;
  readonly items: readonly ShardItem[];
}

export interface QueueOptions {
  /** Seconds a claimed shard may take before it is handed to another worker. */
  readonly expireInSeconds: number;
  /** How often expired shards are looked for (pg-boss maintenance). */
  readonly maintenanceIntervalSeconds?: number;
  /** How many times a shard is handed out again after expiring or failing. */
  readonly retryLimit?: number;
}

/** Images per shard by default: a few minutes of one worker's extraction. */
export const DEFAULT_SHARD_SIZE = 1000;

/** The advisory lock under which pg-boss is installed and queues are made. */
const underBossLock = <T>(pool: PgPool, work: () => Promise<T>) => underSessionLock(pool, 'pipeline/pg-boss', work);

/** pg-boss on the caller's pool (its tables in schema `pgboss`), without cron scheduling. */
export async function startBoss(pool: PgPool, options: Pick<QueueOptions, 'maintenanceIntervalSeconds'> = {}): Promise<PgBoss> {
  const boss = new PgBoss({
    db: { executeSql: (text, values) => pool.query(text, values) },
    schedule: false,
    maintenanceIntervalSeconds: options.maintenanceIntervalSeconds ?? 30,
  });
  // pg-boss reports maintenance failures as events; unhandled, an 'error' event would end the process.
  boss.on('error', () => {});
  // Workers starting together would all see pg-boss not installed and race to create its
  // schema (the losers fail); one at a time, the later ones find it made.
  await underBossLock(pool, () => boss.start());
  return boss;
}

/** The pg-boss queue of a feature set's shards. */
export const queueName = (featureSet: string) => `pipeline-extract-${featureSet}`;

/**
 * The shards of a listing, the same on every machine: one entry per content hash (its
 * first path in code-unit order), in path order, cut every `shardSize` images.
 */
export function planShards(items: readonly ShardItem[], shardSize: number): ShardItem[][] {
  if (!Number.isInteger(shardSize) || shardSize < 1) throw new UserError(`shard size must be a positive integer, got ${shardSize}`);
  const sorted = [...items].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const seen = new Set<string>();
  const unique = sorted.filter((item) => !seen.has(item.sha256) && seen.add(item.sha256));
  const shards: ShardItem[][] = [];
  for (let start = 0; start < unique.length; start += shardSize) shards.push(unique.slice(start, start + shardSize));
  return shards;
}

/** pg-boss running its statements on our transaction's connection. */
const onClient = (client: PgClient) => ({ db: { executeSql: (text: string, values: unknown[]) => client.query(text, values) } });

export interface EnqueueResult {
  readonly plan: string;
  readonly shards: number;
  /** False when the same listing was already planned (by this or another process). */
  readonly created: boolean;
}

/**
 * Plans and enqueues the shards of `items` once: however many processes call this at the
 * same time with the same listing, one plan and one job per shard exist afterwards.
 */
export async function enqueueShards(
  pool: PgPool,
  boss: PgBoss,
  featureSet: string,
  items: readonly ShardItem[],
  options: QueueOptions & { readonly shardSize?: number },
): Promise<EnqueueResult> {
  const shards = planShards(items, options.shardSize ?? DEFAULT_SHARD_SIZE);
  const plan = createHash('sha256')
    .update(JSON.stringify([featureSet, options.shardSize ?? DEFAULT_SHARD_SIZE, shards]))
    .digest('hex')
    .slice(0, 16);
  const queue = queueName(featureSet);
  // pg-boss 10 deadlocks when processes create one queue (and its partition) at the same time.
  await underBossLock(pool, () =>
    boss.createQueue(queue, {
      name: queue,
      expireInSeconds: options.expireInSeconds,
      retryLimit: options.retryLimit ?? 100,
      retryDelay: 0,
    }),
  );
  return inTransaction(pool, async (client) => {
    // Concurrent planners of one listing queue up here; all but the first find the plan made.
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`${featureSet}/${plan}`]);
    const existing = await client.query(`SELECT shards FROM ${SCHEMA}.extract_plans WHERE feature_set = $1 AND plan = $2`, [featureSet, plan]);
    if (existing.rowCount) return { plan, shards: existing.rows[0].shards as number, created: false };
    await client.query(`INSERT INTO ${SCHEMA}.extract_plans (feature_set, plan, queue, shards, images) VALUES ($1, $2, $3, $4, $5)`, [
      featureSet,
      plan,
      queue,
      shards.length,
      shards.reduce((n, s) => n + s.length, 0),
    ]);
    const ids = shards.map(() => randomUUID());
    await boss.insert(
      shards.map((items, shard) => ({ id: ids[shard], name: queue, data: { featureSet, plan, shard, items } satisfies ShardJob })),
      onClient(client),
    );
    await client.query(
      `INSERT INTO ${SCHEMA}.extract_shards (feature_set, plan, shard, images, job_id)
       SELECT $1, $2, * FROM unnest($3::int[], $4::int[], $5::uuid[])`,
      [featureSet, plan, shards.map((_, i) => i), shards.map((s) => s.length), ids],
    );
    return { plan, shards: shards.length, created: true };
  });
}

export interface WorkerOptions {
  /** Recorded with each shard this worker completes. */
  readonly workerId: string;
  /** Wait between looks for work while other workers' shards are still open. */
  readonly pollMs?: number;
  /** Called when a shard is claimed (for progress displays). */
  readonly onClaim?: (job: ShardJob) => void;
  /** Called once a shard's transaction has committed, with the vectors it added. */
  readonly onCommit?: (job: ShardJob, written: number) => void;
  readonly signal?: AbortSignal;
  /** Polled before each claim: true returns at once (the shard in hand was committed). */
  readonly shouldStop?: () => boolean;
}

/** How often a worker tells the server it is alive (`pipeline cache` counts workers seen in the last minute). */
const HEARTBEAT_MS = 15_000;

/**
 * Claims and extracts shards of `featureSet` until every planned shard is complete
 * (waiting while other workers hold the last ones: they may die and expire). `extract`
 * turns a shard into vectors and per-image failures; an exception fails the job, which
 * pg-boss hands out again until its retry limit. Returns the shards this worker completed.
 */
export async function runShardWorker(
  pool: PgPool,
  boss: PgBoss,
  featureSet: string,
  extract: (job: ShardJob) => Promise<BatchResult>,
  options: WorkerOptions,
): Promise<number> {
  const queue = queueName(featureSet);
  let completed = 0;
  await touchWorker(pool, featureSet, options.workerId, 0);
  const heartbeat = setInterval(() => void touchWorker(pool, featureSet, options.workerId, 0).catch(() => {}), HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await claimLoop();
  } finally {
    clearInterval(heartbeat);
  }

  async function claimLoop(): Promise<number> {
  for (;;) {
    options.signal?.throwIfAborted();
    if (options.shouldStop?.()) return completed;
    const [job] = await boss.fetch<ShardJob>(queue, { batchSize: 1 });
    if (!job) {
      if ((await openShards(pool, boss, featureSet)) === 0) return completed;
      await sleep(options.pollMs ?? 1000);
      continue;
    }
    options.onClaim?.(job.data);
    let batch: BatchResult;
    try {
      batch = await extract(job.data);
    } catch (error) {
      await boss.fail(queue, job.id, error as object);
      throw error;
    }
    const written = await inTransaction(pool, async (client) => {
      const written = await writeBatch(client, featureSet, batch);
      await client.query(
        `UPDATE ${SCHEMA}.extract_shards SET completed_at = now(), completed_by = $4, vectors_written = $5
         WHERE feature_set = $1 AND plan = $2 AND shard = $3 AND completed_at IS NULL`,
        [featureSet, job.data.plan, job.data.shard, options.workerId, written],
      );
      await boss.complete(queue, job.id, { written }, onClient(client));
      await touchWorker(client, featureSet, options.workerId, 1);
      return written;
    });
    options.onCommit?.(job.data, written);
    completed++;
  }
  }
}

async function touchWorker(db: Pick<PgPool, 'query'>, featureSet: string, worker: string, shards: number): Promise<void> {
  await db.query(
    `INSERT INTO ${SCHEMA}.extract_workers (feature_set, worker, shards) VALUES ($1, $2, $3)
     ON CONFLICT (feature_set, worker) DO UPDATE SET last_seen = now(), shards = extract_workers.shards + excluded.shards`,
    [featureSet, worker, shards],
  );
}

/** Shards of the feature set not completed yet; throws when one can never complete (retries exhausted). */
async function openShards(pool: PgPool, boss: PgBoss, featureSet: string): Promise<number> {
  const { rows } = await pool.query<{ shard: number; job_id: string }>(
    `SELECT shard, job_id FROM ${SCHEMA}.extract_shards WHERE feature_set = $1 AND completed_at IS NULL ORDER BY plan, shard`,
    [featureSet],
  );
  for (const { shard, job_id } of rows) {
    const job = await boss.getJobById(queueName(featureSet), job_id, { includeArchive: true });
    if (job?.state === 'failed' || job?.state === 'cancelled') {
      throw new UserError(`extraction shard ${shard} of feature set ${featureSet} ${job.state} after ${job.retryCount} retries`);
    }
  }
  return rows.length;
}

export interface ShardStatus {
  readonly shards: number;
  readonly completed: number;
  readonly vectorsWritten: number;
}

/** How far the feature set's distributed extraction is. */
export async function shardStatus(pool: PgPool, featureSet: string): Promise<ShardStatus> {
  const { rows } = await pool.query<ShardStatus>(
    `SELECT count(*)::int AS shards, count(completed_at)::int AS completed, coalesce(sum(vectors_written), 0)::int AS "vectorsWritten"
     FROM ${SCHEMA}.extract_shards WHERE feature_set = $1`,
    [featureSet],
  );
  return rows[0];
}

/**
 * The newest plan of a feature set, shard by shard: done (committed), running (claimed, not
 * expired yet), waiting (not claimed, or put back after a worker died), failed (retries
 * used up); the workers that reported in the last minute, and the images of the shards
 * completed in the last minute per second. With `since`, also the rate since then.
 */
export async function clusterProgress(pool: PgPool, featureSet: string, since?: Date): Promise<ShardProgress | undefined> {
  const plan = await pool.query<{ plan: string }>(
    `SELECT plan FROM ${SCHEMA}.extract_plans WHERE feature_set = $1 ORDER BY created_at DESC, plan LIMIT 1`,
    [featureSet],
  );
  if (!plan.rowCount) return undefined;
  const { rows } = await pool.query<{
    shards: number;
    done: number;
    running: number;
    waiting: number;
    images: number;
    images_done: number;
    last_minute: number;
    since_images: number;
    since_seconds: number | null;
    workers: number;
  }>(
    `SELECT count(*)::int AS shards,
       count(s.completed_at)::int AS done,
       count(*) FILTER (WHERE s.completed_at IS NULL AND j.state = 'active')::int AS running,
       count(*) FILTER (WHERE s.completed_at IS NULL AND j.state IN ('created', 'retry'))::int AS waiting,
       coalesce(sum(s.images), 0)::int AS images,
       coalesce(sum(s.images) FILTER (WHERE s.completed_at IS NOT NULL), 0)::int AS images_done,
       coalesce(sum(s.images) FILTER (WHERE s.completed_at > now() - interval '1 minute'), 0)::int AS last_minute,
       coalesce(sum(s.images) FILTER (WHERE s.completed_at >= $3::timestamptz), 0)::int AS since_images,
       extract(epoch FROM now() - $3::timestamptz)::float8 AS since_seconds,
       (SELECT count(*)::int FROM ${SCHEMA}.extract_workers w WHERE w.feature_set = $1 AND w.last_seen > now() - interval '1 minute') AS workers
     FROM ${SCHEMA}.extract_shards s LEFT JOIN pgboss.job j ON j.id = s.job_id AND j.name = $4
     WHERE s.feature_set = $1 AND s.plan = $2`,
    [featureSet, plan.rows[0].plan, since?.toISOString() ?? null, queueName(featureSet)],
  );
  const r = rows[0];
  return {
    shards: r.shards,
    done: r.done,
    running: r.running,
    waiting: r.waiting,
    // Neither committed nor in the queue's open states: failed, cancelled or archived as such.
    failed: r.shards - r.done - r.running - r.waiting,
    images: r.images,
    imagesDone: r.images_done,
    workersSeen: r.workers,
    imagesPerSecond: r.last_minute / 60,
    ...(since && r.since_seconds ? { imagesPerSecondSince: r.since_images / r.since_seconds } : {}),
  };
}
