/** The Store interface (cache/store.ts) on the embedded SQLite file: the synchronous functions of this folder, answered at once. */
import * as audit from './audit.js';
import { type Db, guardDatabase, openDatabase } from './database.js';
import * as features from './features.js';
import { loadFileHashes, saveFileHashes } from './file-hashes.js';
import type { OpenStoreOptions, Store } from './store-types.js';
import * as sweeps from './sweeps.js';

export function openSqliteStore(path: string, options: OpenStoreOptions = {}): Store {
  return sqliteStore(openDatabase(path, { readonly: options.readonly }), path);
}

/** Wraps an open database; `close()` closes it. */
export function sqliteStore(db: Db, path: string = db.name): Store {
  return {
    kind: 'sqlite',
    location: path,
    ensureFeatureSet: async (set) => features.ensureFeatureSet(db, set),
    getFeatureSet: async (id) => features.getFeatureSet(db, id),
    listFeatureSets: async () => features.listFeatureSets(db),
    replaceItems: async (featureSet, items) => features.replaceItems(db, featureSet, items),
    listItems: async (featureSet) => features.listItems(db, featureSet),
    extractedHashes: async (featureSet, view) => features.extractedHashes(db, featureSet, view),
    saveBatch: async (featureSet, batch) => features.saveBatch(db, featureSet, batch),
    listFailures: async (featureSet) => features.listFailures(db, featureSet),
    loadVectors: async (featureSet, hashes, view) => features.loadVectors(db, featureSet, hashes, view),
    startExtractRun: async (featureSet, root, images) => features.startExtractRun(db, featureSet, root, images),
    finishExtractRun: async (id, outcome) => features.finishExtractRun(db, id, outcome),
    latestExtractRun: async (featureSet, before) => features.latestExtractRun(db, featureSet, before),
    loadSplit: async (featureSet) => sweeps.loadSplit(db, featureSet),
    saveSplit: async (featureSet, rows) => sweeps.saveSplit(db, featureSet, rows),
    createSweep: async (sweep, members) => sweeps.createSweep(db, sweep, members),
    loadSweepMembers: async (id) => sweeps.loadSweepMembers(db, id),
    getSweep: async (id) => sweeps.getSweep(db, id),
    listSweeps: async () => sweeps.listSweeps(db),
    findSweep: async (featureSet, configHash, dataHash) => sweeps.findSweep(db, featureSet, configHash, dataHash),
    finishSweep: async (id, status, seconds) => sweeps.finishSweep(db, id, status, seconds),
    finishedRunKeys: async (id) => sweeps.finishedRunKeys(db, id),
    saveRun: async (id, run) => sweeps.saveRun(db, id, run),
    loadRuns: async (id) => sweeps.loadRuns(db, id),
    loadPerceptualHashes: async (hashes) => audit.loadPerceptualHashes(db, hashes),
    savePerceptualHashes: async (rows) => audit.savePerceptualHashes(db, rows),
    saveAudit: async (record) => audit.saveAudit(db, record),
    latestAudit: async (featureSet) => audit.latestAudit(db, featureSet),
    fileHashes: { load: async (root) => loadFileHashes(db, root), save: async (root, rows) => saveFileHashes(db, root, rows) },
    guard: (work) => guardDatabase(path, work),
    close: async () => void db.close(),
  };
}
