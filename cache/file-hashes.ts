/** Recorded content hashes of dataset entries (cache/store-types.ts FileHashes) in the SQLite cache. */
import type { Db } from './database.js';
import type { FileHash } from './store-types.js';

export function loadFileHashes(db: Db, root: string): Map<string, FileHash> {
  const rows = db.prepare('SELECT path, size, mtime_ms AS mtimeMs, sha256 FROM file_hashes WHERE root = ?').all(root) as FileHash[];
  return new Map(rows.map((row) => [row.path, row]));
}

/** Records hashes (replacing what a path had before), in one transaction. */
export function saveFileHashes(db: Db, root: string, rows: readonly FileHash[]): void {
  const upsert = db.prepare(
    `INSERT INTO file_hashes (root, path, size, mtime_ms, sha256) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (root, path) DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, sha256 = excluded.sha256`,
  );
  db.transaction(() => {
    for (const r of rows) upsert.run(root, r.path, r.size, r.mtimeMs, r.sha256);
  })();
}
