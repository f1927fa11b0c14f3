/**
 * Fault-injection helpers: the CLI runner and error contract of cli.ts, and independent
 * looks into the SQLite cache (better-sqlite3 directly, never through the code under test).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
export { type CliResult, type RunOptions, errorLines, expectOneLineError, runPipeline } from './cli.js';

/** sha256 of a file's bytes ('' when it does not exist or is empty: an empty WAL holds nothing). */
export function fileSha(path: string): string {
  if (!existsSync(path)) return '';
  const bytes = readFileSync(path);
  return bytes.length === 0 ? '' : createHash('sha256').update(bytes).digest('hex');
}

/** sha256 of a database and its WAL and shared-memory files, for "the cache is untouched". */
export function dbFilesSha(path: string): { db: string; wal: string } {
  return { db: fileSha(path), wal: fileSha(`${path}-wal`) };
}

export interface CacheState {
  readonly integrity: string;
  /** sha256 -> vector bytes, per feature set (one set expected in these tests). */
  readonly features: Map<string, Buffer>;
  readonly featureRows: number;
  readonly distinctFeatures: number;
  readonly failures: Map<string, { path: string; error: string }>;
  readonly items: { path: string; label: string; sha256: string }[];
  readonly featureSets: string[];
}

/** Reads the cache independently of the code under test (read-only connection). */
/** `featureSet` limits `features` to that feature set's vectors (keyed by content hash, so several sets would overwrite each other). */
export function readCache(path: string, featureSet?: string): CacheState {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 15000');
    const integrity = (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
    const tables = new Set(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]);
    if (!tables.has('features')) {
      return { integrity, features: new Map(), featureRows: 0, distinctFeatures: 0, failures: new Map(), items: [], featureSets: [] };
    }
    const rows = (
      featureSet === undefined
        ? db.prepare('SELECT sha256, vector FROM features ORDER BY sha256').all()
        : db.prepare('SELECT sha256, vector FROM features WHERE feature_set = ? ORDER BY sha256').all(featureSet)
    ) as { sha256: string; vector: Buffer }[];
    const counts = db.prepare('SELECT COUNT(*) AS n, COUNT(DISTINCT feature_set || sha256) AS d FROM features').get() as { n: number; d: number };
    const failures = db.prepare('SELECT sha256, path, error FROM failures').all() as { sha256: string; path: string; error: string }[];
    const items = db.prepare('SELECT path, label, sha256 FROM dataset_items ORDER BY path').all() as CacheState['items'];
    const featureSets = db.prepare('SELECT id FROM feature_sets ORDER BY id').pluck().all() as string[];
    return {
      integrity,
      features: new Map(rows.map((r) => [r.sha256, Buffer.from(r.vector)])),
      featureRows: counts.n,
      distinctFeatures: counts.d,
      failures: new Map(failures.map((f) => [f.sha256, { path: f.path, error: f.error }])),
      items,
      featureSets,
    };
  } finally {
    db.close();
  }
}

/**
 * Polls a cache while a command runs: when the first feature row became visible and when
 * the count stopped growing (ms since `start`). Used to aim kills at a run's commit window.
 */
export function watchCommits(path: string, start: number, intervalMs = 20): { stop: () => { first: number; last: number; samples: number } } {
  let first = Number.NaN;
  let last = Number.NaN;
  let count = 0;
  let samples = 0;
  const timer = setInterval(() => {
    if (!existsSync(path)) return;
    try {
      const db = new Database(path, { readonly: true, fileMustExist: true });
      try {
        const n = db.prepare('SELECT COUNT(*) FROM features').pluck().get() as number;
        samples++;
        const now = performance.now() - start;
        if (n > 0 && Number.isNaN(first)) first = now;
        if (n > count) {
          count = n;
          last = now;
        }
      } finally {
        db.close();
      }
    } catch {
      /* not created yet, or busy: try again */
    }
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { first, last, samples };
    },
  };
}

/** Rows in one table of a cache (0 when the file does not exist yet or is busy). */
export function rowCount(path: string, table: 'features' | 'sweep_runs'): number {
  if (!existsSync(path)) return 0;
  try {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      return db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;
    } finally {
      db.close();
    }
  } catch {
    return 0;
  }
}

/** Runs one SQL query on a read-only connection. */
export function query<T>(path: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 15000');
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/** Cosine similarity of two float32 vectors stored as bytes. */
export function cosine(a: Buffer, b: Buffer): number {
  const x = new Float32Array(new Uint8Array(a).buffer);
  const y = new Float32Array(new Uint8Array(b).buffer);
  let dot = 0;
  let nx = 0;
  let ny = 0;
  for (let i = 0; i < x.length; i++) {
    dot += x[i] * y[i];
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  return dot / Math.sqrt(nx * ny);
}

/** Euclidean distance of two float32 vectors stored as bytes. */
export function distance(a: Buffer, b: Buffer): number {
  const x = new Float32Array(new Uint8Array(a).buffer);
  const y = new Float32Array(new Uint8Array(b).buffer);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += (x[i] - y[i]) ** 2;
  return Math.sqrt(sum);
}

/** The key of the vector closest to `v`, and how close it is relative to the runner-up (0 = identical, 1 = a tie). */
export function nearest(v: Buffer, candidates: ReadonlyMap<string, Buffer>): { key: string; ratio: number } {
  const ranked = [...candidates].map(([key, c]) => ({ key, d: distance(v, c) })).sort((a, b) => a.d - b.d);
  return { key: ranked[0].key, ratio: ranked[0].d / ranked[1].d };
}

/** The seeded PRNG of the suite (mulberry32), re-exported so fault tests share one. */
export { rng } from './random-model.js';
