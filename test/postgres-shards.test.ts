import test from 'ava';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import seedrandom from 'seedrandom';
import { floatBytes } from '../cache/blobs.js';
import { connectPostgres, type PgPool } from '../cache/postgres/connect.js';
import { ensureFeatureSet, loadVectors } from '../cache/postgres/features.js';
import { SCHEMA, migrate } from '../cache/postgres/schema.js';
import { enqueueShards, planShards, queueName, shardStatus, startBoss } from '../cache/postgres/shards.js';
import { fakeItems, fakeVector } from './helpers/fake-vectors.js';
import { type Cluster, freshDatabase, postgresSuite } from './helpers/postgres.js';
import { REPO_ROOT } from './helpers/shared.js';

const pg = postgresSuite();
const WORKER = join(REPO_ROOT, 'dist', 'test', 'helpers', 'shard-worker.js');

const SET = {
  modelSource: 'test',
  weightsSha256: 'cd'.repeat(32),
  architecture: 'mobilenetv2',
  alpha: 1,
  height: 224,
  width: 224,
  resize: 'fill',
  preprocessing: 'x/127.5-1',
  backend: 'onnx',
  dim: 1280,
};

async function store(t: { teardown: (fn: () => Promise<void>) => void }, cluster: Cluster, featureSet: string): Promise<{ url: string; pool: PgPool }> {
  const url = freshDatabase(cluster, 'shards');
  const pool = await connectPostgres(url);
  t.teardown(() => pool.end());
  await migrate(pool);
  await ensureFeatureSet(pool, { ...SET, id: featureSet });
  return { url, pool };
}

test('shards are planned the same from any listing order, one entry per content', (t) => {
  const items = fakeItems(25);
  const copy = { path: 'zz/copy-of-3.jpg', sha256: items[3].sha256 };
  const shuffled = [...items, copy].sort(() => 0.5 - seedrandom('s')());
  const shards = planShards(shuffled, 10);
  t.deepEqual(shards, planShards([...items, copy], 10));
  t.deepEqual(shards.map((s) => s.length), [10, 10, 5]);
  t.deepEqual(shards.flat().map((i) => i.path), items.map((i) => i.path).sort());
  t.throws(() => planShards(items, 0), { message: 'shard size must be a positive integer, got 0' });
});

pg.test('processes enqueuing the same listing at once create one plan and one job per shard', async (t, cluster) => {
  const { url, pool } = await store(t, cluster, 'fs-enqueue');
  const pools = await Promise.all([1, 2, 3, 4].map(() => connectPostgres(url)));
  const bosses = await Promise.all(pools.map((p) => startBoss(p)));
  t.teardown(async () => {
    for (const boss of bosses) await boss.stop({ graceful: false, wait: true });
    for (const p of pools) await p.end();
  });
  const items = fakeItems(95);
  const results = await Promise.all(bosses.map((boss, i) => enqueueShards(pools[i], boss, 'fs-enqueue', items, { expireInSeconds: 60, shardSize: 10 })));
  t.is(results.filter((r) => r.created).length, 1);
  t.true(results.every((r) => r.plan === results[0].plan && r.shards === 10));
  t.is(await bosses[0].getQueueSize(queueName('fs-enqueue')), 10);
  t.deepEqual(await shardStatus(pool, 'fs-enqueue'), { shards: 10, completed: 0, vectorsWritten: 0 });
  // Again later: still one plan.
  const again = await enqueueShards(pool, bosses[0], 'fs-enqueue', [...items].reverse(), { expireInSeconds: 60, shardSize: 10 });
  t.false(again.created);
  t.is(await bosses[0].getQueueSize(queueName('fs-enqueue')), 10);
});

interface Worker {
  readonly id: string;
  readonly child: ChildProcess;
  /** The shard claimed and not yet committed, and how many of its images were reported. */
  current?: { shard: number; images: number };
  killAt?: number;
  readonly exited: Promise<number | null>;
}

pg.serial('SIGKILLed workers mid-shard: their shards expire to others, every image stored exactly once', async (t, cluster) => {
  const featureSet = 'fs-kill';
  const { url, pool } = await store(t, cluster, featureSet);
  const boss = await startBoss(pool);
  t.teardown(() => boss.stop({ graceful: false, wait: true }));
  const items = fakeItems(1200);
  // Same content under a second name: extracted once, in whichever shard holds its first path.
  items.push({ path: 'zz/duplicate.jpg', sha256: items[10].sha256 });
  const { shards } = await enqueueShards(pool, boss, featureSet, items, { expireInSeconds: 2, shardSize: 60, retryLimit: 50 });
  t.is(shards, 20);

  const random = seedrandom('kills');
  const kills = { planned: 6, aimed: 0, midShard: 0 };
  const workers = new Set<Worker>();
  let started = 0;
  const children: ChildProcess[] = [];
  t.teardown(() => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));

  const launch = (): Worker => {
    const id = `w${started++}`;
    const child = spawn(process.execPath, [WORKER, url, featureSet, id, '5'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const worker: Worker = { id, child, exited: once(child, 'exit').then(([code]) => code as number | null) };
    workers.add(worker);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const [what, shard, n] = line.split(' ');
      if (what === 'claim') {
        worker.current = { shard: Number(shard), images: 0 };
        // Aim a kill at a random image of this shard while kills remain.
        if (kills.aimed < kills.planned && random() < 0.5) {
          kills.aimed++;
          worker.killAt = 1 + Math.floor(random() * 55);
        }
      } else if (what === 'image' && worker.current) {
        worker.current.images = Number(n) + 1;
        if (worker.killAt !== undefined && worker.current.images >= worker.killAt) {
          worker.killAt = undefined;
          kills.midShard++;
          child.kill('SIGKILL');
        }
      } else if (what === 'commit') {
        worker.current = undefined;
      }
    });
    return worker;
  };

  for (let i = 0; i < 3; i++) launch();
  // Every killed worker is replaced; the run ends when every live worker has exited by itself.
  while (workers.size) {
    const [worker, code] = await Promise.race([...workers].map((w) => w.exited.then((c) => [w, c] as const)));
    workers.delete(worker);
    if (worker.child.signalCode === 'SIGKILL') launch();
    else t.is(code, 0, `worker ${worker.id} exit code`);
  }
  t.log(`${started} worker processes, ${kills.midShard} SIGKILLs landed mid-shard (after 1..55 of 60 images)`);
  t.is(kills.midShard, kills.planned);

  const unique = new Set(items.map((i) => i.sha256));
  const { rows } = await pool.query(`SELECT count(*)::int AS n, count(DISTINCT sha256)::int AS d FROM ${SCHEMA}.features WHERE feature_set = $1`, [featureSet]);
  t.deepEqual(rows[0], { n: unique.size, d: unique.size });
  const vectors = await loadVectors(pool, featureSet);
  t.true([...unique].every((sha) => vectors.has(sha) && Buffer.from(floatBytes(vectors.get(sha)!)).equals(floatBytes(fakeVector(sha)))));
  // Each image was written by exactly one committed shard: the per-shard counts add up to the total.
  t.deepEqual(await shardStatus(pool, featureSet), { shards: 20, completed: 20, vectorsWritten: unique.size });
  const jobs = await pool.query<{ job_id: string }>(`SELECT job_id FROM ${SCHEMA}.extract_shards WHERE feature_set = $1`, [featureSet]);
  let handedOver = 0;
  for (const { job_id } of jobs.rows) {
    const job = await boss.getJobById(queueName(featureSet), job_id, { includeArchive: true });
    t.is(job?.state, 'completed');
    if (job && job.retryCount > 0) handedOver++;
  }
  t.log(`${handedOver} shards were handed to another worker after their first one died`);
  // At least the killed workers' shards; more is allowed: under load a live worker can
  // outlast the 2 s expiry too, and its shard is then redone elsewhere (harmless by design).
  t.true(handedOver >= 1, `${handedOver} shards handed over for ${kills.midShard} kills`);
});
