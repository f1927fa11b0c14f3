/** Perceptual hashes of images, and the stored results of `pipeline audit` with their 2-D maps. */
import type { Db } from './database.js';

/**
 * One 64-bit perceptual hash per image content (data/phash.ts), as 16 hex digits. Keyed by
 * content like the features, but not by feature set: the hash squeezes any input size to
 * 32 x 32, so every feature set of the same image shares it.
 */
export const IMAGE_HASHES_TABLE = `
CREATE TABLE IF NOT EXISTS image_hashes (
  sha256 TEXT PRIMARY KEY,
  phash TEXT NOT NULL
) WITHOUT ROWID;
`;

/** Each audit's findings as the JSON `pipeline audit --json` prints, and its map, one row per image. */
export const AUDIT_TABLES = `
CREATE TABLE IF NOT EXISTS audits (
  id INTEGER PRIMARY KEY,
  feature_set TEXT NOT NULL REFERENCES feature_sets(id),
  created_at TEXT NOT NULL,
  config_json TEXT NOT NULL,
  result_json TEXT NOT NULL,
  seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_map (
  audit_id INTEGER NOT NULL REFERENCES audits(id),
  path TEXT NOT NULL,
  x REAL NOT NULL,
  y REAL NOT NULL,
  PRIMARY KEY (audit_id, path)
) WITHOUT ROWID;
`;

/**
 * Creates the audit's tables if the database predates them. CREATE TABLE IF NOT EXISTS is
 * idempotent and cheap, so this is safe to call before every audit until the schema
 * migrations carry these tables.
 */
export function ensureAuditTables(db: Db): void {
  db.exec(IMAGE_HASHES_TABLE + AUDIT_TABLES);
}

/** Stored hashes for the contents asked for (missing ones are absent). */
export function loadPerceptualHashes(db: Db, hashes: readonly string[]): Map<string, string> {
  const wanted = new Set(hashes);
  const found = new Map<string, string>();
  const rows = db.prepare('SELECT sha256, phash FROM image_hashes').iterate() as Iterable<{ sha256: string; phash: string }>;
  for (const { sha256, phash } of rows) if (wanted.has(sha256)) found.set(sha256, phash);
  return found;
}

/** Stores hashes in one transaction; an existing hash of the same content is kept. */
export function savePerceptualHashes(db: Db, rows: ReadonlyArray<{ sha256: string; phash: string }>): void {
  const insert = db.prepare('INSERT OR IGNORE INTO image_hashes (sha256, phash) VALUES (?, ?)');
  db.transaction(() => {
    for (const row of rows) insert.run(row.sha256, row.phash);
  }).immediate();
}

export interface MapPoint {
  readonly path: string;
  readonly x: number;
  readonly y: number;
}

export interface StoredAudit<R> {
  readonly id: number;
  readonly featureSet: string;
  readonly createdAt: string;
  readonly seconds: number;
  readonly result: R;
  readonly map: MapPoint[];
}

/** Stores an audit and its map in one transaction; returns its id. */
export function saveAudit(
  db: Db,
  audit: { featureSet: string; config: unknown; result: unknown; seconds: number; map: readonly MapPoint[] },
): number {
  const insertAudit = db.prepare(
    'INSERT INTO audits (feature_set, created_at, config_json, result_json, seconds) VALUES (?, ?, ?, ?, ?)',
  );
  const insertPoint = db.prepare('INSERT INTO audit_map (audit_id, path, x, y) VALUES (?, ?, ?, ?)');
  return db
    .transaction(() => {
      const id = Number(
        insertAudit.run(audit.featureSet, new Date().toISOString(), JSON.stringify(audit.config), JSON.stringify(audit.result), audit.seconds)
          .lastInsertRowid,
      );
      for (const point of audit.map) insertPoint.run(id, point.path, point.x, point.y);
      return id;
    })
    .immediate();
}

/** The newest audit of a feature set, if any (undefined too when the tables do not exist yet). */
export function latestAudit<R>(db: Db, featureSet: string): StoredAudit<R> | undefined {
  const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audits'").get();
  if (!exists) return undefined;
  const row = db
    .prepare(
      `SELECT id, feature_set AS featureSet, created_at AS createdAt, seconds, result_json AS resultJson
       FROM audits WHERE feature_set = ? ORDER BY id DESC LIMIT 1`,
    )
    .get(featureSet) as { id: number; featureSet: string; createdAt: string; seconds: number; resultJson: string } | undefined;
  if (!row) return undefined;
  const map = db.prepare('SELECT path, x, y FROM audit_map WHERE audit_id = ? ORDER BY path').all(row.id) as MapPoint[];
  return { id: row.id, featureSet: row.featureSet, createdAt: row.createdAt, seconds: row.seconds, result: JSON.parse(row.resultJson) as R, map };
}
