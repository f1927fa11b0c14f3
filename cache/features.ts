/** Feature sets, their feature vectors, failures, dataset listings and extract runs. */
import { bytesToFloats, floatBytes } from './blobs.js';
import type { Db } from './database.js';

export interface FeatureSet {
  readonly id: string;
  readonly modelSource: string;
  readonly weightsSha256: string;
  readonly architecture: string;
  readonly alpha: number;
  readonly height: number;
  readonly width: number;
  readonly resize: string;
  readonly preprocessing: string;
  readonly backend: string;
  readonly dim: number;
  readonly createdAt: string;
}

export interface FeatureSetSummary extends FeatureSet {
  readonly images: number;
  /** Images of the listing with a vector of the original view. */
  readonly features: number;
  readonly failures: number;
  /** The views with vectors, and how many images of the listing have each. */
  readonly views: ReadonlyArray<{ view: string; vectors: number }>;
}

export interface ItemRow {
  readonly path: string;
  readonly label: string;
  readonly split: string | null;
  readonly sha256: string;
}

export interface FailureRow {
  readonly sha256: string;
  readonly path: string;
  readonly error: string;
}

export interface ExtractRun {
  readonly id: number;
  readonly featureSet: string;
  readonly datasetRoot: string;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly status: string;
  readonly images: number;
  readonly extracted: number;
  readonly failed: number;
  readonly seconds: number | null;
  readonly imagesPerSecond: number | null;
}

const FEATURE_SET_COLUMNS = `id, model_source AS modelSource, weights_sha256 AS weightsSha256, architecture, alpha,
  height, width, resize, preprocessing, backend, dim, created_at AS createdAt`;

/** Records a feature set unless it exists; returns the stored one. */
export function ensureFeatureSet(db: Db, set: Omit<FeatureSet, 'createdAt'>): FeatureSet {
  db.prepare(
    `INSERT OR IGNORE INTO feature_sets (id, model_source, weights_sha256, architecture, alpha, height, width, resize, preprocessing, backend, dim, created_at)
     VALUES (@id, @modelSource, @weightsSha256, @architecture, @alpha, @height, @width, @resize, @preprocessing, @backend, @dim, @createdAt)`,
  ).run({ ...set, createdAt: new Date().toISOString() });
  return getFeatureSet(db, set.id)!;
}

export function getFeatureSet(db: Db, id: string): FeatureSet | undefined {
  return db.prepare(`SELECT ${FEATURE_SET_COLUMNS} FROM feature_sets WHERE id = ?`).get(id) as FeatureSet | undefined;
}

export function listFeatureSets(db: Db): FeatureSetSummary[] {
  const sets = db
    .prepare(
      `SELECT ${FEATURE_SET_COLUMNS},
        (SELECT COUNT(*) FROM dataset_items i WHERE i.feature_set = s.id) AS images,
        (SELECT COUNT(DISTINCT i.sha256) FROM dataset_items i JOIN features f ON f.feature_set = i.feature_set AND f.sha256 = i.sha256
          WHERE i.feature_set = s.id AND f.view = 'original') AS features,
        (SELECT COUNT(*) FROM failures x WHERE x.feature_set = s.id) AS failures
       FROM feature_sets s ORDER BY created_at, id`,
    )
    .all() as Omit<FeatureSetSummary, 'views'>[];
  const views = db.prepare(
    `SELECT f.view AS view, COUNT(DISTINCT i.sha256) AS vectors FROM features f
       JOIN dataset_items i ON i.feature_set = f.feature_set AND i.sha256 = f.sha256
     WHERE f.feature_set = ? GROUP BY f.view ORDER BY f.view = 'original' DESC, f.view`,
  );
  return sets.map((set) => ({ ...set, views: views.all(set.id) as FeatureSetSummary['views'] }));
}

/** Replaces the dataset listing of a feature set in one transaction. */
export function replaceItems(db: Db, featureSet: string, items: readonly ItemRow[]): void {
  const remove = db.prepare('DELETE FROM dataset_items WHERE feature_set = ?');
  const insert = db.prepare(
    'INSERT INTO dataset_items (feature_set, path, label, split, sha256) VALUES (?, ?, ?, ?, ?)',
  );
  // A failure whose content is no longer in the dataset (the file was fixed or removed) is history.
  const dropStaleFailures = db.prepare(
    'DELETE FROM failures WHERE feature_set = ? AND sha256 NOT IN (SELECT sha256 FROM dataset_items WHERE feature_set = ?)',
  );
  db.transaction(() => {
    remove.run(featureSet);
    for (const item of items) insert.run(featureSet, item.path, item.label, item.split, item.sha256);
    dropStaleFailures.run(featureSet, featureSet);
  }).immediate();
}

export function listItems(db: Db, featureSet: string): ItemRow[] {
  return db
    .prepare('SELECT path, label, split, sha256 FROM dataset_items WHERE feature_set = ? ORDER BY path')
    .all(featureSet) as ItemRow[];
}

/** Content hashes that already have a feature vector of `view` in this set. */
export function extractedHashes(db: Db, featureSet: string, view = 'original'): Set<string> {
  const rows = db.prepare('SELECT sha256 FROM features WHERE feature_set = ? AND view = ?').pluck().all(featureSet, view) as string[];
  return new Set(rows);
}

export interface BatchResult {
  /** `view` defaults to 'original'. */
  readonly features: ReadonlyArray<{ sha256: string; view?: string; vector: Float32Array }>;
  readonly failures: readonly FailureRow[];
}

/**
 * Stores one batch atomically. Re-inserting a vector that exists is a no-op, so two
 * processes extracting the same images, or a rerun after a kill, never duplicate rows.
 */
export function saveBatch(db: Db, featureSet: string, batch: BatchResult): void {
  const insertFeature = db.prepare('INSERT OR IGNORE INTO features (feature_set, sha256, view, vector) VALUES (?, ?, ?, ?)');
  const clearFailure = db.prepare('DELETE FROM failures WHERE feature_set = ? AND sha256 = ?');
  const insertFailure = db.prepare(
    'INSERT OR REPLACE INTO failures (feature_set, sha256, path, error) VALUES (?, ?, ?, ?)',
  );
  db.transaction(() => {
    for (const { sha256, view = 'original', vector } of batch.features) {
      insertFeature.run(featureSet, sha256, view, floatBytes(vector));
      clearFailure.run(featureSet, sha256);
    }
    for (const failure of batch.failures) insertFailure.run(featureSet, failure.sha256, failure.path, failure.error);
  }).immediate();
}

export function listFailures(db: Db, featureSet: string): FailureRow[] {
  return db
    .prepare('SELECT sha256, path, error FROM failures WHERE feature_set = ? ORDER BY path')
    .all(featureSet) as FailureRow[];
}

/** Feature vectors of one view by content hash, for the hashes asked for (missing ones are absent). */
export function loadVectors(db: Db, featureSet: string, hashes: readonly string[], view = 'original'): Map<string, Float32Array> {
  const wanted = new Set(hashes);
  const vectors = new Map<string, Float32Array>();
  const rows = db.prepare('SELECT sha256, vector FROM features WHERE feature_set = ? AND view = ?').iterate(featureSet, view) as Iterable<{
    sha256: string;
    vector: Buffer;
  }>;
  for (const { sha256, vector } of rows) {
    if (!wanted.has(sha256)) continue;
    vectors.set(sha256, bytesToFloats(vector));
  }
  return vectors;
}

export function startExtractRun(db: Db, featureSet: string, datasetRoot: string, images: number): number {
  const result = db
    .prepare(
      `INSERT INTO extract_runs (feature_set, dataset_root, started_at, status, images) VALUES (?, ?, ?, 'running', ?)`,
    )
    .run(featureSet, datasetRoot, new Date().toISOString(), images);
  return Number(result.lastInsertRowid);
}

export function finishExtractRun(
  db: Db,
  id: number,
  outcome: { status: 'done' | 'interrupted' | 'failed'; extracted: number; failed: number; seconds: number },
): void {
  db.prepare(
    `UPDATE extract_runs SET finished_at = ?, status = ?, extracted = ?, failed = ?, seconds = ?,
       images_per_second = CASE WHEN ? > 0 THEN ? / ? END WHERE id = ?`,
  ).run(
    new Date().toISOString(),
    outcome.status,
    outcome.extracted,
    outcome.failed,
    outcome.seconds,
    outcome.seconds,
    outcome.extracted,
    outcome.seconds,
    id,
  );
}

/**
 * The most recent extract run of a feature set that processed images (for reports); with
 * `before`, the most recent one that started before that ISO time, so an old sweep's report
 * keeps describing the extraction it was trained on.
 */
export function latestExtractRun(db: Db, featureSet: string, before = '9999'): ExtractRun | undefined {
  return db
    .prepare(
      `SELECT id, feature_set AS featureSet, dataset_root AS datasetRoot, started_at AS startedAt, finished_at AS finishedAt,
        status, images, extracted, failed, seconds, images_per_second AS imagesPerSecond
       FROM extract_runs WHERE feature_set = ? AND started_at < ? ORDER BY (extracted > 0) DESC, id DESC LIMIT 1`,
    )
    .get(featureSet, before) as ExtractRun | undefined;
}
