/** Perceptual hashes of images, and the stored results of `pipeline audit` with their 2-D maps (tables: database.ts, step 4). */
import type { Db } from './database.js';

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
