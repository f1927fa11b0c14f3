/**
 * The Store interface (cache/store.ts) on a PostgreSQL server: the feature store of
 * features.ts, the records of records.ts and the pg-boss shard queue of shards.ts behind
 * one object. Opening creates or upgrades the schema unless the command only reads.
 */
import type PgBoss from 'pg-boss';
import { UserError } from '../../core/errors.js';
import type { OpenStoreOptions, ShardQueue, Store } from '../store-types.js';
import { type PgPool, connectPostgres, describeServer, guardPostgres, redact, serverAddress } from './connect.js';
import * as features from './features.js';
import * as records from './records.js';
import { SCHEMA_VERSION, migrate, schemaVersion } from './schema.js';
import { clusterProgress, enqueueShards, runShardWorker, startBoss } from './shards.js';
import { inTransaction, underSessionLock } from './transaction.js';

export async function openPostgresStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  const address = serverAddress(url);
  const pool = await connectPostgres(url);
  try {
    await guardPostgres(address, async () => {
      if (!options.readonly) return migrate(pool);
      const version = await schemaVersion(pool);
      const where = `PostgreSQL server ${describeServer(address)}, database "${address.database}"`;
      if (version === 0) throw new UserError(`${where} holds no pipeline cache yet: run \`pipeline extract --db ${redact(url)}\` first`);
      if (version > SCHEMA_VERSION) throw new UserError(`the PostgreSQL feature store was written by a newer pipeline (schema ${version} > ${SCHEMA_VERSION})`);
      if (version < SCHEMA_VERSION) {
        throw new UserError(`${where} uses an older cache schema (${version} < ${SCHEMA_VERSION}): run \`pipeline extract\` or \`pipeline sweep\` once to upgrade it (readers never write)`);
      }
    });
  } catch (error) {
    await pool.end().catch(() => {});
    throw error;
  }
  return postgresStore(pool, url);
}

function postgresStore(pool: PgPool, url: string): Store {
  const address = serverAddress(url);
  let boss: Promise<PgBoss> | undefined;
  // Expired shards (their worker died) are looked for every 10 s: a cheap query.
  const bossOf = () => (boss ??= startBoss(pool, { maintenanceIntervalSeconds: 10 }));
  const shards: ShardQueue = {
    async plan(featureSet, items, options) {
      const result = await enqueueShards(pool, await bossOf(), featureSet, items, options);
      return { plan: result.plan, shards: result.shards, created: result.created };
    },
    async work(featureSet, extract, options) {
      return runShardWorker(pool, await bossOf(), featureSet, extract, {
        workerId: options.workerId,
        shouldStop: options.shouldStop,
        onCommit: options.onCommit,
      });
    },
    progress: (featureSet, since) => clusterProgress(pool, featureSet, since),
  };
  return {
    kind: 'postgres',
    location: redact(url),
    ensureFeatureSet: (set) => features.ensureFeatureSet(pool, set),
    getFeatureSet: (id) => features.getFeatureSet(pool, id),
    listFeatureSets: () => records.listFeatureSets(pool),
    replaceItems: (featureSet, items) => features.replaceItems(pool, featureSet, items),
    listItems: (featureSet) => features.listItems(pool, featureSet),
    extractedHashes: (featureSet, view) => features.extractedHashes(pool, featureSet, view),
    saveBatch: async (featureSet, batch) => void (await inTransaction(pool, (client) => features.writeBatch(client, featureSet, batch))),
    listFailures: (featureSet) => records.listFailures(pool, featureSet),
    loadVectors: (featureSet, hashes, view) => features.loadVectors(pool, featureSet, hashes, view),
    startExtractRun: (featureSet, root, images) => records.startExtractRun(pool, featureSet, root, images),
    finishExtractRun: (id, outcome) => records.finishExtractRun(pool, id, outcome),
    latestExtractRun: (featureSet, before) => records.latestExtractRun(pool, featureSet, before),
    loadSplit: (featureSet) => records.loadSplit(pool, featureSet),
    saveSplit: (featureSet, rows) => records.saveSplit(pool, featureSet, rows),
    createSweep: (sweep, members) => records.createSweep(pool, sweep, members),
    loadSweepMembers: (id) => records.loadSweepMembers(pool, id),
    getSweep: (id) => records.getSweep(pool, id),
    listSweeps: () => records.listSweeps(pool),
    findSweep: (featureSet, configHash, dataHash) => records.findSweep(pool, featureSet, configHash, dataHash),
    finishSweep: (id, status, seconds) => records.finishSweep(pool, id, status, seconds),
    finishedRunKeys: (id) => records.finishedRunKeys(pool, id),
    saveRun: (id, run) => records.saveRun(pool, id, run),
    loadRuns: (id) => records.loadRuns(pool, id),
    loadPerceptualHashes: (hashes) => records.loadPerceptualHashes(pool, hashes),
    savePerceptualHashes: (rows) => records.savePerceptualHashes(pool, rows),
    saveAudit: (audit) => records.saveAudit(pool, audit),
    latestAudit: (featureSet) => records.latestAudit(pool, featureSet),
    fileHashes: {
      load: (root) => records.loadFileHashes(pool, root),
      save: (root, rows) => records.saveFileHashes(pool, root, rows),
      exclusive: (root, work) => underSessionLock(pool, `pipeline/hashing/${root}`, work),
    },
    shards,
    guard: (work) => guardPostgres(address, work),
    async close() {
      if (boss) await (await boss).stop({ graceful: false, wait: true }).catch(() => {});
      await pool.end();
    },
  };
}
