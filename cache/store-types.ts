/**
 * The storage interface every command works through (see cache/store.ts for the registry
 * that picks an implementation). Its own module, so the implementations and the registry
 * both depend on it and never on each other.
 */
import type { MapPoint, StoredAudit } from './audit.js';
import type { BatchResult, ExtractRun, FailureRow, FeatureSet, FeatureSetSummary, ItemRow } from './features.js';
import type { NewSweep, SplitRow, StoredRun, SweepMember, SweepRow } from './sweeps.js';

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** How messages and listings name the store: the file's path, or the URL without its password. */
  readonly location: string;

  ensureFeatureSet(set: Omit<FeatureSet, 'createdAt'>): Promise<FeatureSet>;
  getFeatureSet(id: string): Promise<FeatureSet | undefined>;
  listFeatureSets(): Promise<FeatureSetSummary[]>;
  replaceItems(featureSet: string, items: readonly ItemRow[]): Promise<void>;
  listItems(featureSet: string): Promise<ItemRow[]>;
  extractedHashes(featureSet: string, view?: string): Promise<Set<string>>;
  saveBatch(featureSet: string, batch: BatchResult): Promise<void>;
  listFailures(featureSet: string): Promise<FailureRow[]>;
  loadVectors(featureSet: string, hashes: readonly string[], view?: string): Promise<Map<string, Float32Array>>;
  startExtractRun(featureSet: string, datasetRoot: string, images: number): Promise<number>;
  finishExtractRun(
    id: number,
    outcome: { status: 'done' | 'interrupted' | 'failed'; extracted: number; failed: number; seconds: number },
  ): Promise<void>;
  latestExtractRun(featureSet: string, before?: string): Promise<ExtractRun | undefined>;

  loadSplit(featureSet: string): Promise<SplitRow[]>;
  saveSplit(featureSet: string, rows: readonly SplitRow[]): Promise<void>;
  createSweep(sweep: NewSweep, members: readonly SweepMember[]): Promise<number>;
  loadSweepMembers(sweepId: number): Promise<SweepMember[]>;
  getSweep(id: number): Promise<SweepRow | undefined>;
  listSweeps(): Promise<SweepRow[]>;
  findSweep(featureSet: string, configHash: string, dataHash?: string): Promise<SweepRow | undefined>;
  finishSweep(id: number, status: 'interrupted' | 'done', seconds: number): Promise<void>;
  finishedRunKeys(sweepId: number): Promise<Set<string>>;
  saveRun(sweepId: number, run: StoredRun): Promise<void>;
  loadRuns(sweepId: number): Promise<StoredRun[]>;

  loadPerceptualHashes(hashes: readonly string[]): Promise<Map<string, string>>;
  savePerceptualHashes(rows: ReadonlyArray<{ sha256: string; phash: string }>): Promise<void>;
  saveAudit(audit: { featureSet: string; config: unknown; result: unknown; seconds: number; map: readonly MapPoint[] }): Promise<number>;
  latestAudit<R>(featureSet: string): Promise<StoredAudit<R> | undefined>;

  /**
   * Content hashes recorded by earlier runs and workers: of a URL manifest's images by URL
   * (root ''), and on a server store also of files, by path under a dataset root with the
   * size and modification time they had.
   */
  readonly fileHashes: FileHashes;

  /** Work shared between processes and machines; only a server store has it. */
  readonly shards?: ShardQueue;

  /** Runs work, turning failures a user can act on (read-only, full disk, lost server) into one line naming the store. */
  guard<T>(work: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface FileHash {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly sha256: string;
}

export interface FileHashes {
  load(root: string): Promise<Map<string, FileHash>>;
  save(root: string, rows: readonly FileHash[]): Promise<void>;
  /**
   * Runs `work` while no other process runs work under the same root (a server store):
   * workers started together hash a dataset one after another, and all but the first
   * find every hash recorded.
   */
  exclusive?<T>(root: string, work: () => Promise<T>): Promise<T>;
}

/** One shard of a distributed extraction, as a worker receives it. */
export interface Shard {
  /** The plan (listing) the shard was cut from. */
  readonly plan: string;
  readonly shard: number;
  readonly items: ReadonlyArray<{ readonly path: string; readonly sha256: string }>;
}

export interface ShardPlan {
  /** Names the listing: the same on every process that planned the same images. */
  readonly plan: string;
  readonly shards: number;
  /** False when another process (or an earlier run) planned this listing already. */
  readonly created: boolean;
}

/** What `pipeline cache` shows of a feature set's distributed extraction. */
export interface ShardProgress {
  readonly shards: number;
  readonly done: number;
  readonly running: number;
  readonly waiting: number;
  readonly failed: number;
  readonly images: number;
  readonly imagesDone: number;
  /** Workers that reported in the last minute. */
  readonly workersSeen: number;
  /** Images of the shards completed in the last minute, per second. */
  readonly imagesPerSecond: number;
  /** Images of the shards completed since `since`, per second of that time (for a worker's summary). */
  readonly imagesPerSecondSince?: number;
}

export interface ShardWorkerOptions {
  readonly workerId: string;
  readonly shouldStop?: () => boolean;
  /** After each committed shard: the shard, the vectors it added. */
  readonly onCommit?: (shard: Shard, written: number) => void;
}

/** Cutting a feature set's images into shards that any number of workers claim, at most one at a time each. */
export interface ShardQueue {
  /** Plans and enqueues `items` once, however many processes ask at the same time. */
  plan(featureSet: string, items: ReadonlyArray<{ path: string; sha256: string }>, options: { shardSize: number; expireInSeconds: number }): Promise<ShardPlan>;
  /**
   * Claims shards until every planned shard of the feature set is complete; each shard's
   * vectors, failures and completion commit together. Returns the shards this worker did.
   */
  work(featureSet: string, extract: (shard: Shard) => Promise<BatchResult>, options: ShardWorkerOptions): Promise<number>;
  progress(featureSet: string, since?: Date): Promise<ShardProgress | undefined>;
}

export interface OpenStoreOptions {
  /** Refuse to create or migrate: the command only reads. */
  readonly readonly?: boolean;
}

