/**
 * `npm run bench -- pg-store`: how fast the PostgreSQL feature store takes and gives back
 * 1280-d vectors, against the SQLite cache doing the same on the same machine in the same
 * run. Insert: batches of 1000 vectors, each one transaction (as a shard commits); read:
 * every vector of the set in one bulk read. Targets: >= 5,000 vectors/s in, >= 50,000 out.
 *
 * The server is PIPELINE_BENCH_PG (a postgres:// URL; the bench creates and drops its own
 * tables' rows under fresh feature-set ids) or else a throwaway local cluster with fsync on.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../cache/database.js';
import { ensureFeatureSet as ensureSqliteSet, loadVectors as loadSqlite, saveBatch } from '../cache/features.js';
import { floatBytes } from '../cache/blobs.js';
import { connectPostgres, type PgPool } from '../cache/postgres/connect.js';
import { ensureFeatureSet, loadVectors, writeBatch } from '../cache/postgres/features.js';
import { SCHEMA, migrate } from '../cache/postgres/schema.js';
import { inTransaction } from '../cache/postgres/transaction.js';
import { type Cluster, postgresUnavailable, startCluster } from '../test/helpers/postgres-cluster.js';
import { median, timed } from './machine.js';

const VECTORS = 20_000;
const BATCH = 1000;
const ROUNDS = 3;
const DIM = 1280;

/** The feature-set record generated vectors are stored under (give it an `id`). */
export const BENCH_FEATURE_SET = {
  modelSource: 'bench',
  weightsSha256: '00'.repeat(32),
  architecture: 'mobilenetv2',
  alpha: 1,
  height: 224,
  width: 224,
  resize: 'fill',
  preprocessing: 'x/127.5-1',
  backend: 'bench',
  dim: DIM,
};

function makeFeatures(round: number) {
  return Array.from({ length: VECTORS }, (_, i) => {
    const vector = new Float32Array(DIM);
    for (let j = 0; j < DIM; j++) vector[j] = Math.sin(round * 1e6 + i * DIM + j);
    return { sha256: `${round}-${String(i).padStart(8, '0')}`, vector };
  });
}

type Features = ReturnType<typeof makeFeatures>;

const seconds = async (work: () => unknown) => (await timed(work)).seconds;

const rate = (s: number) => VECTORS / s;
const fmt = (values: number[]) => `${Math.round(median(values)).toLocaleString('en-US')} vectors/s (runs: ${values.map((v) => Math.round(v)).join(', ')})`;

/** The same rows by one multi-row INSERT per batch (bytea[] parameter sent as hex text): what COPY replaces. */
async function insertByUnnest(pool: PgPool, featureSet: string, features: Features): Promise<void> {
  for (let at = 0; at < features.length; at += BATCH) {
    const batch = features.slice(at, at + BATCH);
    await pool.query(
      `INSERT INTO ${SCHEMA}.features (feature_set, sha256, vector) SELECT $1, * FROM unnest($2::text[], $3::bytea[]) ON CONFLICT DO NOTHING`,
      [featureSet, batch.map((f) => f.sha256), batch.map((f) => floatBytes(f.vector))],
    );
  }
}

export async function run(): Promise<void> {
  let cluster: Cluster | undefined;
  let url = process.env.PIPELINE_BENCH_PG;
  if (!url) {
    const unavailable = postgresUnavailable();
    if (unavailable) {
      console.log(`skipped: ${unavailable}; or set PIPELINE_BENCH_PG=postgres://...`);
      return;
    }
    cluster = await startCluster({ durable: true });
    url = cluster.url();
  }
  const pool = await connectPostgres(url);
  const folder = await mkdtemp(join(tmpdir(), 'pipeline-bench-pg-'));
  const sqlite = openDatabase(join(folder, 'bench.sqlite'));
  const results = {
    copyIn: [] as number[],
    unnestIn: [] as number[],
    copyOut: [] as number[],
    sqliteIn: [] as number[],
    sqliteOut: [] as number[],
    freshMemory: [] as number[],
  };
  try {
    await migrate(pool);
    console.log(`${VECTORS} vectors of ${DIM} float32 per round, batches of ${BATCH}, ${ROUNDS} rounds; server: ${cluster ? 'local throwaway cluster, fsync on' : 'PIPELINE_BENCH_PG'}`);
    for (let round = 0; round < ROUNDS; round++) {
      const features = makeFeatures(round);
      const copySet = `bench-copy-${process.pid}-${round}`;
      const unnestSet = `bench-unnest-${process.pid}-${round}`;
      for (const id of [copySet, unnestSet]) await ensureFeatureSet(pool, { ...BENCH_FEATURE_SET, id });
      ensureSqliteSet(sqlite, { ...BENCH_FEATURE_SET, id: copySet });

      results.copyIn.push(
        rate(
          await seconds(async () => {
            for (let at = 0; at < VECTORS; at += BATCH) {
              await inTransaction(pool, (client) => writeBatch(client, copySet, { features: features.slice(at, at + BATCH), failures: [] }));
            }
          }),
        ),
      );
      results.unnestIn.push(rate(await seconds(() => insertByUnnest(pool, unnestSet, features))));
      results.sqliteIn.push(
        rate(
          await seconds(() => {
            for (let at = 0; at < VECTORS; at += BATCH) saveBatch(sqlite, copySet, { features: features.slice(at, at + BATCH), failures: [] });
          }),
        ),
      );
      let read = 0;
      results.copyOut.push(rate(await seconds(async () => (read = (await loadVectors(pool, copySet)).size))));
      if (read !== VECTORS) throw new Error(`read ${read} of ${VECTORS} vectors back`);
      // A read must put every vector in memory never touched before; on some VMs that alone is slow.
      results.freshMemory.push(rate(await seconds(() => new Float32Array(VECTORS * DIM).fill(1))));
      const hashes = features.map((f) => f.sha256);
      results.sqliteOut.push(rate(await seconds(() => (read = loadSqlite(sqlite, copySet, hashes).size))));
      if (read !== VECTORS) throw new Error(`read ${read} of ${VECTORS} vectors back from SQLite`);
      for (const id of [copySet, unnestSet]) {
        await pool.query(`DELETE FROM ${SCHEMA}.features WHERE feature_set = $1`, [id]);
        await pool.query(`DELETE FROM ${SCHEMA}.feature_sets WHERE id = $1`, [id]);
      }
    }
    const ratio = (a: number[], b: number[]) => (median(a) / median(b)).toFixed(2);
    console.log(`insert, binary COPY + INSERT .. ON CONFLICT (store): ${fmt(results.copyIn)}`);
    console.log(`insert, multi-row INSERT of a bytea[] (reference):  ${fmt(results.unnestIn)}`);
    console.log(`insert, SQLite saveBatch (reference):               ${fmt(results.sqliteIn)}`);
    console.log(`bulk read, binary COPY TO STDOUT (store):           ${fmt(results.copyOut)}`);
    console.log(`bulk read, SQLite loadVectors (reference):          ${fmt(results.sqliteOut)}`);
    console.log(`floor: filling ${((VECTORS * DIM * 4) / 2 ** 20).toFixed(0)} MiB of fresh memory:   ${fmt(results.freshMemory)}`);
    console.log(
      `ratios of medians: COPY/unnest insert ${ratio(results.copyIn, results.unnestIn)}x, PostgreSQL/SQLite insert ${ratio(results.copyIn, results.sqliteIn)}x, read ${ratio(results.copyOut, results.sqliteOut)}x, PostgreSQL read / fresh-memory floor ${ratio(results.copyOut, results.freshMemory)}x`,
    );
  } finally {
    sqlite.close();
    await pool.end();
    await rm(folder, { recursive: true, force: true });
    cluster?.stop();
  }
}
