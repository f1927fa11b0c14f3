/**
 * The rest of the cache's records on PostgreSQL, row for row what cache/features.ts,
 * cache/sweeps.ts and cache/audit.ts keep in SQLite: listings of feature sets, failures,
 * extract runs, splits, sweeps with their members and runs, perceptual hashes, audits.
 * Times are timestamptz, handed out as the same ISO strings SQLite stores; many rows go in
 * as arrays through one `unnest` INSERT, never one statement per row.
 */
import { floatBytes } from '../blobs.js';
import type { MapPoint, StoredAudit } from '../audit.js';
import type { ExtractRun, FailureRow, FeatureSetSummary } from '../features.js';
import {
  type NewSweep,
  type RunRecord,
  type SplitRow,
  type StoredRun,
  type SweepMember,
  type SweepRecord,
  type SweepRow,
  toStoredRun,
  toSweepRow,
} from '../sweeps.js';
import type { FileHash } from '../store-types.js';
import type { PgPool } from './connect.js';
import { SCHEMA } from './schema.js';
import { inTransaction } from './transaction.js';

type Queryable = Pick<PgPool, 'query'>;

/** A timestamptz as JavaScript's toISOString() writes it (what the SQLite cache stores). */
const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

export async function listFeatureSets(db: Queryable): Promise<FeatureSetSummary[]> {
  const { rows } = await db.query<Omit<FeatureSetSummary, 'views'>>(
    `SELECT id, model_source AS "modelSource", weights_sha256 AS "weightsSha256", architecture, alpha, height, width, resize,
       preprocessing, backend, dim, ${iso('created_at')} AS "createdAt",
       (SELECT count(*)::int FROM ${SCHEMA}.dataset_items i WHERE i.feature_set = s.id) AS images,
       (SELECT count(DISTINCT i.sha256)::int FROM ${SCHEMA}.dataset_items i
          JOIN ${SCHEMA}.features f ON f.feature_set = i.feature_set AND f.sha256 = i.sha256
        WHERE i.feature_set = s.id AND f.view = 'original') AS features,
       (SELECT count(*)::int FROM ${SCHEMA}.failures x WHERE x.feature_set = s.id) AS failures
     FROM ${SCHEMA}.feature_sets s ORDER BY s.created_at, s.id COLLATE "C"`,
  );
  const summaries: FeatureSetSummary[] = [];
  for (const set of rows) {
    const views = await db.query<{ view: string; vectors: number }>(
      `SELECT f.view, count(DISTINCT i.sha256)::int AS vectors FROM ${SCHEMA}.features f
         JOIN ${SCHEMA}.dataset_items i ON i.feature_set = f.feature_set AND i.sha256 = f.sha256
       WHERE f.feature_set = $1 GROUP BY f.view ORDER BY f.view = 'original' DESC, f.view COLLATE "C"`,
      [set.id],
    );
    summaries.push({ ...set, views: views.rows });
  }
  return summaries;
}

export async function listFailures(db: Queryable, featureSet: string): Promise<FailureRow[]> {
  const { rows } = await db.query<FailureRow>(
    `SELECT sha256, path, error FROM ${SCHEMA}.failures WHERE feature_set = $1 ORDER BY path COLLATE "C"`,
    [featureSet],
  );
  return rows;
}

export async function startExtractRun(db: Queryable, featureSet: string, datasetRoot: string, images: number): Promise<number> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO ${SCHEMA}.extract_runs (feature_set, dataset_root, started_at, status, images)
     VALUES ($1, $2, $3, 'running', $4) RETURNING id::int`,
    [featureSet, datasetRoot, new Date().toISOString(), images],
  );
  return rows[0].id;
}

export async function finishExtractRun(
  db: Queryable,
  id: number,
  outcome: { status: 'done' | 'interrupted' | 'failed'; extracted: number; failed: number; seconds: number },
): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.extract_runs SET finished_at = $1, status = $2, extracted = $3::int, failed = $4, seconds = $5::float8,
       images_per_second = CASE WHEN $5::float8 > 0 THEN $3::int / $5::float8 END WHERE id = $6`,
    [new Date().toISOString(), outcome.status, outcome.extracted, outcome.failed, outcome.seconds, id],
  );
}

/** As cache/features.ts' latestExtractRun: the newest run that processed images (started before `before`, if given). */
export async function latestExtractRun(db: Queryable, featureSet: string, before?: string): Promise<ExtractRun | undefined> {
  const { rows } = await db.query<ExtractRun>(
    `SELECT id::int, feature_set AS "featureSet", dataset_root AS "datasetRoot", ${iso('started_at')} AS "startedAt",
       ${iso('finished_at')} AS "finishedAt", status, images, extracted, failed, seconds, images_per_second AS "imagesPerSecond"
     FROM ${SCHEMA}.extract_runs WHERE feature_set = $1 AND ($2::timestamptz IS NULL OR started_at < $2::timestamptz)
     ORDER BY (extracted > 0) DESC, id DESC LIMIT 1`,
    [featureSet, before ?? null],
  );
  return rows[0];
}

export async function loadSplit(db: Queryable, featureSet: string): Promise<SplitRow[]> {
  const { rows } = await db.query<SplitRow>(
    `SELECT path, split, source FROM ${SCHEMA}.splits WHERE feature_set = $1 ORDER BY path COLLATE "C"`,
    [featureSet],
  );
  return rows;
}

export async function saveSplit(pool: PgPool, featureSet: string, rows: readonly SplitRow[]): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`splits/${featureSet}`]);
    await client.query(`DELETE FROM ${SCHEMA}.splits WHERE feature_set = $1`, [featureSet]);
    await client.query(
      `INSERT INTO ${SCHEMA}.splits (feature_set, path, split, source) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])`,
      [featureSet, rows.map((r) => r.path), rows.map((r) => r.split), rows.map((r) => r.source)],
    );
  });
}

const SWEEP_COLUMNS = `id::int, feature_set AS "featureSet", config_hash AS "configHash", config_json AS "configJson",
  split_source AS "splitSource", trainer, data_hash AS "dataHash", labels_json AS "labelsJson", dataset_root AS "datasetRoot",
  images_left_out AS "imagesLeftOut", size_sets_json AS "sizeSetsJson", status, planned_runs AS "plannedRuns", ${iso('started_at')} AS "startedAt",
  ${iso('finished_at')} AS "finishedAt", wall_seconds AS "wallSeconds"`;

export async function createSweep(pool: PgPool, sweep: NewSweep, members: readonly SweepMember[]): Promise<number> {
  return inTransaction(pool, async (client) => {
    const { rows } = await client.query<{ id: number }>(
      `INSERT INTO ${SCHEMA}.sweeps (feature_set, config_hash, config_json, split_source, trainer, data_hash, labels_json, dataset_root,
         images_left_out, size_sets_json, status, planned_runs, started_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running', $11, $12) RETURNING id::int`,
      [
        sweep.featureSet,
        sweep.configHash,
        sweep.configJson,
        sweep.splitSource,
        sweep.trainer,
        sweep.dataHash,
        JSON.stringify(sweep.labels),
        sweep.datasetRoot,
        sweep.imagesLeftOut,
        sweep.sizeSets ? JSON.stringify(sweep.sizeSets) : null,
        sweep.plannedRuns,
        new Date().toISOString(),
      ],
    );
    const id = rows[0].id;
    await client.query(
      `INSERT INTO ${SCHEMA}.sweep_items (sweep_id, split, position, path, label, sha256)
       SELECT $1, * FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[])`,
      [id, members.map((m) => m.split), members.map((m) => m.position), members.map((m) => m.path), members.map((m) => m.label), members.map((m) => m.sha256)],
    );
    return id;
  });
}

export async function loadSweepMembers(db: Queryable, sweepId: number): Promise<SweepMember[]> {
  const { rows } = await db.query<SweepMember>(
    `SELECT split, position, path, label, sha256 FROM ${SCHEMA}.sweep_items WHERE sweep_id = $1
     ORDER BY CASE split WHEN 'train' THEN 0 WHEN 'val' THEN 1 ELSE 2 END, position`,
    [sweepId],
  );
  return rows;
}

export async function getSweep(db: Queryable, id: number): Promise<SweepRow | undefined> {
  const { rows } = await db.query<SweepRecord>(`SELECT ${SWEEP_COLUMNS} FROM ${SCHEMA}.sweeps WHERE id = $1`, [id]);
  return rows[0] && toSweepRow(rows[0]);
}

export async function listSweeps(db: Queryable): Promise<SweepRow[]> {
  const { rows } = await db.query<SweepRecord>(`SELECT ${SWEEP_COLUMNS} FROM ${SCHEMA}.sweeps ORDER BY id`);
  return rows.map(toSweepRow);
}

export async function findSweep(db: Queryable, featureSet: string, configHash: string, dataHash?: string): Promise<SweepRow | undefined> {
  const { rows } = await db.query<SweepRecord>(
    `SELECT ${SWEEP_COLUMNS} FROM ${SCHEMA}.sweeps WHERE feature_set = $1 AND config_hash = $2 AND ($3::text IS NULL OR data_hash = $3)
     ORDER BY id DESC LIMIT 1`,
    [featureSet, configHash, dataHash ?? null],
  );
  return rows[0] && toSweepRow(rows[0]);
}

export async function finishSweep(db: Queryable, id: number, status: 'interrupted' | 'done', seconds: number): Promise<void> {
  await db.query(
    `UPDATE ${SCHEMA}.sweeps SET status = $1, finished_at = $2, wall_seconds = COALESCE(wall_seconds, 0) + $3 WHERE id = $4`,
    [status, new Date().toISOString(), seconds, id],
  );
}

export async function finishedRunKeys(db: Queryable, sweepId: number): Promise<Set<string>> {
  const { rows } = await db.query<{ run_key: string }>(`SELECT run_key FROM ${SCHEMA}.sweep_runs WHERE sweep_id = $1`, [sweepId]);
  return new Set(rows.map((r) => r.run_key));
}

export async function saveRun(db: Queryable, sweepId: number, run: StoredRun): Promise<void> {
  const values = [
    sweepId,
    run.runKey,
    run.variantKey,
    JSON.stringify(run.params),
    run.seed,
    run.status,
    run.bestEpoch,
    run.epochsRun,
    run.trainLoss,
    run.trainAccuracy,
    run.valLoss,
    run.valAccuracy,
    run.testLoss,
    run.testAccuracy,
    run.testAccuracySingleView,
    run.macroF1,
    JSON.stringify(run.perClass),
    JSON.stringify(run.confusion),
    JSON.stringify(run.curves),
    floatBytes(run.testProbabilities),
    JSON.stringify(run.weights.map(({ name, shape }) => ({ name, shape }))),
    Buffer.concat(run.weights.map((w) => floatBytes(w.values))),
    run.trainSeconds,
    new Date().toISOString(),
  ];
  const columns = `sweep_id, run_key, variant_key, params_json, seed, status, best_epoch, epochs_run, train_loss, train_accuracy,
    val_loss, val_accuracy, test_loss, test_accuracy, test_accuracy_single_view, macro_f1, per_class_json, confusion_json, curves_json,
    test_probabilities, weights_json, weights, train_seconds, finished_at`;
  const updates = columns
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== 'sweep_id' && c !== 'run_key')
    .map((c) => `${c} = excluded.${c}`)
    .join(', ');
  await db.query(
    `INSERT INTO ${SCHEMA}.sweep_runs (${columns}) VALUES (${values.map((_, i) => `$${i + 1}`).join(', ')})
     ON CONFLICT (sweep_id, run_key) DO UPDATE SET ${updates}`,
    values,
  );
}

export async function loadRuns(db: Queryable, sweepId: number): Promise<StoredRun[]> {
  const { rows } = await db.query<RunRecord>(
    `SELECT run_key AS "runKey", variant_key AS "variantKey", params_json AS "paramsJson", seed, status, best_epoch AS "bestEpoch",
       epochs_run AS "epochsRun", train_loss AS "trainLoss", train_accuracy AS "trainAccuracy", val_loss AS "valLoss",
       val_accuracy AS "valAccuracy", test_loss AS "testLoss", test_accuracy AS "testAccuracy",
       test_accuracy_single_view AS "testAccuracySingleView", macro_f1 AS "macroF1",
       per_class_json AS "perClassJson", confusion_json AS "confusionJson", curves_json AS "curvesJson",
       test_probabilities AS "testProbabilities", weights_json AS "weightsJson", weights, train_seconds AS "trainSeconds"
     FROM ${SCHEMA}.sweep_runs WHERE sweep_id = $1 ORDER BY variant_key COLLATE "C", seed`,
    [sweepId],
  );
  return rows.map(toStoredRun);
}

export async function loadFileHashes(db: Queryable, root: string): Promise<Map<string, FileHash>> {
  const { rows } = await db.query<FileHash>(
    `SELECT path, size::float8 AS size, mtime_ms AS "mtimeMs", sha256 FROM ${SCHEMA}.file_hashes WHERE root = $1`,
    [root],
  );
  return new Map(rows.map((row) => [row.path, row]));
}

/** Records hashes (replacing what a path had before): one statement for all rows. */
export async function saveFileHashes(db: Queryable, root: string, rows: readonly FileHash[]): Promise<void> {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO ${SCHEMA}.file_hashes (root, path, size, mtime_ms, sha256)
     SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::float8[], $5::text[])
     ON CONFLICT (root, path) DO UPDATE SET size = excluded.size, mtime_ms = excluded.mtime_ms, sha256 = excluded.sha256`,
    [root, rows.map((r) => r.path), rows.map((r) => r.size), rows.map((r) => r.mtimeMs), rows.map((r) => r.sha256)],
  );
}

export async function loadPerceptualHashes(db: Queryable, hashes: readonly string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ sha256: string; phash: string }>(
    `SELECT sha256, phash FROM ${SCHEMA}.image_hashes WHERE sha256 = ANY($1::text[])`,
    [hashes],
  );
  return new Map(rows.map((r) => [r.sha256, r.phash]));
}

export async function savePerceptualHashes(db: Queryable, rows: ReadonlyArray<{ sha256: string; phash: string }>): Promise<void> {
  await db.query(
    `INSERT INTO ${SCHEMA}.image_hashes (sha256, phash) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (sha256) DO NOTHING`,
    [rows.map((r) => r.sha256), rows.map((r) => r.phash)],
  );
}

export async function saveAudit(
  pool: PgPool,
  audit: { featureSet: string; config: unknown; result: unknown; seconds: number; map: readonly MapPoint[] },
): Promise<number> {
  return inTransaction(pool, async (client) => {
    const { rows } = await client.query<{ id: number }>(
      `INSERT INTO ${SCHEMA}.audits (feature_set, created_at, config_json, result_json, seconds) VALUES ($1, $2, $3, $4, $5) RETURNING id::int`,
      [audit.featureSet, new Date().toISOString(), JSON.stringify(audit.config), JSON.stringify(audit.result), audit.seconds],
    );
    const id = rows[0].id;
    await client.query(
      `INSERT INTO ${SCHEMA}.audit_map (audit_id, path, x, y) SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::float8[])`,
      [id, audit.map.map((p) => p.path), audit.map.map((p) => p.x), audit.map.map((p) => p.y)],
    );
    return id;
  });
}

export async function latestAudit<R>(db: Queryable, featureSet: string): Promise<StoredAudit<R> | undefined> {
  const { rows } = await db.query<{ id: number; featureSet: string; createdAt: string; seconds: number; resultJson: string }>(
    `SELECT id::int, feature_set AS "featureSet", ${iso('created_at')} AS "createdAt", seconds, result_json AS "resultJson"
     FROM ${SCHEMA}.audits WHERE feature_set = $1 ORDER BY id DESC LIMIT 1`,
    [featureSet],
  );
  const row = rows[0];
  if (!row) return undefined;
  const map = await db.query<MapPoint>(`SELECT path, x, y FROM ${SCHEMA}.audit_map WHERE audit_id = $1 ORDER BY path COLLATE "C"`, [row.id]);
  return { id: row.id, featureSet: row.featureSet, createdAt: row.createdAt, seconds: row.seconds, result: JSON.parse(row.resultJson) as R, map: map.rows };
}
