/**
 * A worker process for the shard queue tests: claims shards of a feature set on the
 * PostgreSQL server at argv[2] and "extracts" them with fake vectors, `delayMs` per image,
 * reporting each step on stdout so a test can aim a SIGKILL into the middle of a shard.
 *
 *   node shard-worker.js URL FEATURE_SET WORKER_ID DELAY_MS
 * stdout: `claim SHARD`, `image SHARD INDEX`, `commit SHARD WRITTEN`, `exit COMPLETED`
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { connectPostgres } from '../../cache/postgres/connect.js';
import { runShardWorker, startBoss } from '../../cache/postgres/shards.js';
import { fakeVector } from './fake-vectors.js';

const [url, featureSet, workerId, delayMs] = process.argv.slice(2);
const say = (line: string) => process.stdout.write(`${line}\n`);

const pool = await connectPostgres(url, { max: 3 });
const boss = await startBoss(pool, { maintenanceIntervalSeconds: 1 });
const completed = await runShardWorker(
  pool,
  boss,
  featureSet,
  async (job) => {
    const features = [];
    for (const [index, item] of job.items.entries()) {
      await sleep(Number(delayMs));
      features.push({ sha256: item.sha256, vector: fakeVector(item.sha256) });
      say(`image ${job.shard} ${index}`);
    }
    return { features, failures: [] };
  },
  {
    workerId,
    pollMs: 200,
    onClaim: (job) => say(`claim ${job.shard}`),
    onCommit: (job, written) => say(`commit ${job.shard} ${written}`),
  },
);
await boss.stop({ graceful: false, wait: true });
await pool.end();
say(`exit ${completed}`);
