/**
 * The project's one SQLite file. This folder owns every SQL statement; the rest of the
 * code calls the typed functions in cache/*.ts.
 *
 * WAL + synchronous=NORMAL: a committed transaction survives the process being killed at
 * any moment (only a power cut can lose the last few). busy_timeout lets two processes
 * share the file: a writer waits for the other instead of failing.
 */
import Database from 'better-sqlite3';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UserError, messageOf } from '../core/errors.js';

export type Db = Database.Database;

/**
 * The schema as a list of steps: step i brings a database from user_version i to i+1. A new
 * database runs them all, an older one the ones it lacks, so both end up identical.
 */
export const MIGRATIONS: readonly string[] = [
  `
CREATE TABLE IF NOT EXISTS feature_sets (
  id TEXT PRIMARY KEY,
  model_source TEXT NOT NULL,
  weights_sha256 TEXT NOT NULL,
  architecture TEXT NOT NULL,
  alpha REAL NOT NULL,
  height INTEGER NOT NULL,
  width INTEGER NOT NULL,
  resize TEXT NOT NULL,
  preprocessing TEXT NOT NULL,
  backend TEXT NOT NULL,
  dim INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
-- Keyed by content, so a renamed or copied image is never extracted twice (step 3 adds
-- the view to the key).
CREATE TABLE IF NOT EXISTS features (
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  sha256 TEXT NOT NULL,
  vector BLOB NOT NULL,
  PRIMARY KEY (feature_set, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  sha256 TEXT NOT NULL,
  path TEXT NOT NULL,
  error TEXT NOT NULL,
  PRIMARY KEY (feature_set, sha256)
) WITHOUT ROWID;
-- The dataset as the last extract saw it: which file has which label, split and content.
CREATE TABLE IF NOT EXISTS dataset_items (
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  path TEXT NOT NULL,
  label TEXT NOT NULL,
  split TEXT,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (feature_set, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS extract_runs (
  id INTEGER PRIMARY KEY,
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  dataset_root TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  status TEXT NOT NULL,
  images INTEGER NOT NULL,
  extracted INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  seconds REAL,
  images_per_second REAL
);
-- The train/val/test assignment every sweep of a feature set uses (official or seeded).
CREATE TABLE IF NOT EXISTS splits (
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  path TEXT NOT NULL,
  split TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')),
  source TEXT NOT NULL,
  PRIMARY KEY (feature_set, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sweeps (
  id INTEGER PRIMARY KEY,
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  config_hash TEXT NOT NULL,
  config_json TEXT NOT NULL,
  split_source TEXT NOT NULL,
  backend TEXT NOT NULL,
  status TEXT NOT NULL,
  planned_runs INTEGER NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  wall_seconds REAL
);
-- One row per (variant, seed), written the moment the run finishes: resume skips them.
CREATE TABLE IF NOT EXISTS sweep_runs (
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  run_key TEXT NOT NULL,
  variant_key TEXT NOT NULL,
  params_json TEXT NOT NULL,
  seed INTEGER NOT NULL,
  status TEXT NOT NULL,
  best_epoch INTEGER NOT NULL,
  epochs_run INTEGER NOT NULL,
  train_loss REAL, train_accuracy REAL,
  val_loss REAL, val_accuracy REAL,
  test_loss REAL, test_accuracy REAL,
  macro_f1 REAL,
  per_class_json TEXT NOT NULL,
  confusion_json TEXT NOT NULL,
  curves_json TEXT NOT NULL,
  test_probabilities BLOB NOT NULL,
  weights_json TEXT NOT NULL,
  weights BLOB NOT NULL,
  train_seconds REAL NOT NULL,
  finished_at TEXT NOT NULL,
  PRIMARY KEY (sweep_id, run_key)
) WITHOUT ROWID;
`,
  // A sweep is pinned to the exact data it trained on: its members (path, label, split, content)
  // in the row order of every stored array, and a hash of them that a new sweep is matched
  // against. Sweeps made before this step have no members (data_hash NULL) and must be rerun.
  `
ALTER TABLE sweeps RENAME COLUMN backend TO trainer;
ALTER TABLE sweeps ADD COLUMN data_hash TEXT;
ALTER TABLE sweeps ADD COLUMN labels_json TEXT;
ALTER TABLE sweeps ADD COLUMN dataset_root TEXT;
ALTER TABLE sweeps ADD COLUMN images_left_out INTEGER;
CREATE TABLE sweep_items (
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
  split TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')),
  position INTEGER NOT NULL,
  path TEXT NOT NULL,
  label TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (sweep_id, split, position)
) WITHOUT ROWID;
CREATE INDEX sweeps_by_config ON sweeps (feature_set, config_hash, data_hash);
`,
  // 3: a vector per view of an image (data/views.ts); vectors stored before views existed
  // are of the image as it is, view 'original'.
  `
CREATE TABLE features_with_view (
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  sha256 TEXT NOT NULL,
  view TEXT NOT NULL DEFAULT 'original',
  vector BLOB NOT NULL,
  PRIMARY KEY (feature_set, sha256, view)
) WITHOUT ROWID;
INSERT INTO features_with_view (feature_set, sha256, view, vector) SELECT feature_set, sha256, 'original', vector FROM features;
DROP TABLE features;
ALTER TABLE features_with_view RENAME TO features;
`,
  // 4: what `pipeline audit` needs. One 64-bit perceptual hash per image content
  // (data/phash.ts) as 16 hex digits, not per feature set: the hash squeezes any input size
  // to 32 x 32, so every feature set of the same image shares it. Each audit's findings as
  // the JSON `pipeline audit --json` prints, and its map, one row per image.
  `
CREATE TABLE image_hashes (
  sha256 TEXT PRIMARY KEY,
  phash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE audits (
  id INTEGER PRIMARY KEY,
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  created_at TEXT NOT NULL,
  config_json TEXT NOT NULL,
  result_json TEXT NOT NULL,
  seconds REAL NOT NULL
);
CREATE TABLE audit_map (
  audit_id INTEGER NOT NULL REFERENCES audits(id),
  path TEXT NOT NULL,
  x REAL NOT NULL,
  y REAL NOT NULL,
  PRIMARY KEY (audit_id, path)
) WITHOUT ROWID;
`,
  // 5: sweeps over views and sizes. A sweep records the feature set of every size it
  // concatenates ({"448x597": id, ...}); a run, its test accuracy on view 0 alone (no
  // averaging over views). Older rows keep NULL: one size, one view.
  `
ALTER TABLE sweeps ADD COLUMN size_sets_json TEXT;
ALTER TABLE sweep_runs ADD COLUMN test_accuracy_single_view REAL;
`,
  // 6: content hashes of images named in a URL manifest, by URL (root ''), so a rerun
  // knows what a URL holds without downloading it again. The same table as on PostgreSQL,
  // where it also records files under a shared dataset folder by size and mtime.
  `
CREATE TABLE file_hashes (
  root TEXT NOT NULL,
  path TEXT NOT NULL,
  size INTEGER NOT NULL,
  mtime_ms REAL NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (root, path)
) WITHOUT ROWID;
`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface OpenOptions {
  readonly readonly?: boolean;
}

/** Opens (creating if needed) the cache database; one-line errors for files that cannot serve. */
export function openDatabase(file: string, options: OpenOptions = {}): Db {
  const path = resolve(file);
  if (options.readonly && !existsSync(path)) {
    throw new UserError(`no cache database at ${path} (--db / cache.db): run \`pipeline extract\` first`);
  }
  if (existsSync(path) && !looksLikeSqlite(path)) {
    throw new UserError(`${path} is not a SQLite database (--db / cache.db)`);
  }
  // SQLite opens an unwritable file read-only without a word and fails at the first write.
  if (!options.readonly && existsSync(path) && !writable(path)) {
    throw new UserError(`cache database ${path} is read-only (--db / cache.db)`);
  }
  let db: Db;
  try {
    if (!options.readonly) mkdirSync(dirname(path), { recursive: true });
    db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    db.pragma('busy_timeout = 15000');
    if (options.readonly) requireSchema(db, path);
    else {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      migrate(db);
    }
  } catch (error) {
    if (error instanceof UserError) throw error;
    throw new UserError(`cannot open cache database ${path}: ${messageOf(error)}`);
  }
  return db;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs work on the database at `path`, turning the SQLite failures a user can act on
 * (read-only file, full disk, damaged file) into one line that names the file.
 */
export async function guardDatabase<T>(path: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const reason = failureReason((error as { code?: unknown }).code);
    throw reason ? new UserError(`cache database ${resolve(path)} ${reason}`) : error;
  }
}

function failureReason(code: unknown): string | undefined {
  if (typeof code !== 'string') return undefined;
  if (code.startsWith('SQLITE_READONLY')) return 'is read-only';
  if (code === 'SQLITE_FULL' || code === 'ENOSPC') return 'cannot grow: the disk is full (what was saved before is kept)';
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return 'is damaged: not a valid SQLite database';
  if (code.startsWith('SQLITE_IOERR')) return `hit an I/O error (${code})`;
  if (code.startsWith('SQLITE_CANTOPEN')) return 'cannot be opened';
  return undefined;
}

function looksLikeSqlite(path: string): boolean {
  const header = Buffer.alloc(16);
  const fd = openSync(path, 'r');
  try {
    const read = readSync(fd, header, 0, 16, 0);
    return read === 0 || header.toString('latin1') === 'SQLite format 3\u0000';
  } finally {
    closeSync(fd);
  }
}

/** A read-only command on an empty or foreign SQLite file: say so instead of "no such table". */
function requireSchema(db: Db, path: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version === 0) throw new UserError(`${path} holds no pipeline cache yet: run \`pipeline extract\` first`);
  if (version > SCHEMA_VERSION) {
    throw new UserError(`cache database was written by a newer pipeline (schema ${version} > ${SCHEMA_VERSION})`);
  }
  if (version < SCHEMA_VERSION) {
    throw new UserError(
      `${path} uses an older cache schema (${version} < ${SCHEMA_VERSION}): run \`pipeline extract\` or \`pipeline sweep\` once to upgrade it (readers never write)`,
    );
  }
}

function migrate(db: Db): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new UserError(`cache database was written by a newer pipeline (schema ${version} > ${SCHEMA_VERSION})`);
  }
  if (version === SCHEMA_VERSION) return;
  db.transaction(() => {
    // Re-read inside the write lock: another process may have migrated meanwhile.
    const current = db.pragma('user_version', { simple: true }) as number;
    for (let step = current; step < SCHEMA_VERSION; step++) db.exec(MIGRATIONS[step]);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
