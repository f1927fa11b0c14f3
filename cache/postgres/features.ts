/**
 * Feature sets, vectors, failures and dataset listings on PostgreSQL: the same records as
 * the SQLite cache (cache/features.ts), moved in bulk. Vectors go in and out by binary COPY
 * (one statement per batch, never one row per query).
 */
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { floatBytes } from '../blobs.js';
import type { BatchResult, FeatureSet, ItemRow } from '../features.js';
import type { PgClient, PgPool } from './connect.js';
import { CopyRowDecoder, encodeCopyRows } from './copy-binary.js';
import { SCHEMA } from './schema.js';
import { inTransaction } from './transaction.js';

type Queryable = Pick<PgPool, 'query'>;

const FEATURE_SET_COLUMNS = `id, model_source AS "modelSource", weights_sha256 AS "weightsSha256", architecture, alpha,
  height, width, resize, preprocessing, backend, dim, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "createdAt"`;

/** Records a feature set unless it exists; returns the stored one. */
export async function ensureFeatureSet(db: Queryable, set: Omit<FeatureSet, 'createdAt'>): Promise<FeatureSet> {
  await db.query(
    `INSERT INTO ${SCHEMA}.feature_sets (id, model_source, weights_sha256, architecture, alpha, height, width, resize, preprocessing, backend, dim)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
    [set.id, set.modelSource, set.weightsSha256, set.architecture, set.alpha, set.height, set.width, set.resize, set.preprocessing, set.backend, set.dim],
  );
  return (await getFeatureSet(db, set.id))!;
}

export async function getFeatureSet(db: Queryable, id: string): Promise<FeatureSet | undefined> {
  const { rows } = await db.query<FeatureSet>(`SELECT ${FEATURE_SET_COLUMNS} FROM ${SCHEMA}.feature_sets WHERE id = $1`, [id]);
  return rows[0];
}

/** Replaces the dataset listing of a feature set in one transaction (one INSERT for all rows). */
export async function replaceItems(pool: PgPool, featureSet: string, items: readonly ItemRow[]): Promise<void> {
  await inTransaction(pool, async (client) => {
    // Workers starting together all record the listing: one at a time, or the second's DELETE
    // would miss the rows the first just inserted and its INSERT collide with them.
    await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`items/${featureSet}`]);
    await client.query(`DELETE FROM ${SCHEMA}.dataset_items WHERE feature_set = $1`, [featureSet]);
    await client.query(
      `INSERT INTO ${SCHEMA}.dataset_items (feature_set, path, label, split, sha256)
       SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])`,
      [featureSet, items.map((i) => i.path), items.map((i) => i.label), items.map((i) => i.split), items.map((i) => i.sha256)],
    );
    // A failure whose content is no longer in the dataset (the file was fixed or removed) is history.
    await client.query(
      `DELETE FROM ${SCHEMA}.failures f WHERE f.feature_set = $1
         AND NOT EXISTS (SELECT 1 FROM ${SCHEMA}.dataset_items i WHERE i.feature_set = $1 AND i.sha256 = f.sha256)`,
      [featureSet],
    );
  });
}

export async function listItems(db: Queryable, featureSet: string): Promise<ItemRow[]> {
  // COLLATE "C": byte order, the same on every server whatever its locale.
  const { rows } = await db.query<ItemRow>(
    `SELECT path, label, split, sha256 FROM ${SCHEMA}.dataset_items WHERE feature_set = $1 ORDER BY path COLLATE "C"`,
    [featureSet],
  );
  return rows;
}

/** Content hashes that already have a feature vector of `view` in this set. */
export async function extractedHashes(db: Queryable, featureSet: string, view = 'original'): Promise<Set<string>> {
  const { rows } = await db.query<{ sha256: string }>(`SELECT sha256 FROM ${SCHEMA}.features WHERE feature_set = $1 AND view = $2`, [
    featureSet,
    view,
  ]);
  return new Set(rows.map((r) => r.sha256));
}

/**
 * Writes one batch inside the caller's transaction (so it can commit together with other
 * work, such as completing a shard's job). The vectors are COPYed into a staging table
 * that disappears at commit, then inserted unless present: a rerun or a second worker
 * never duplicates a row. Returns how many vectors were new.
 */
export async function writeBatch(client: PgClient, featureSet: string, batch: BatchResult): Promise<number> {
  // ON COMMIT DROP: outside a transaction the table would vanish at once and COPY fail loudly.
  await client.query('CREATE TEMP TABLE feature_staging (sha256 text NOT NULL, view text NOT NULL, vector bytea NOT NULL) ON COMMIT DROP');
  await pipeline(
    Readable.from([encodeCopyRows(batch.features.map(({ sha256, view = 'original', vector }) => [sha256, view, floatBytes(vector)]))]),
    client.query(copyFrom('COPY feature_staging (sha256, view, vector) FROM STDIN (FORMAT binary)')),
  );
  const inserted = await client.query(
    `INSERT INTO ${SCHEMA}.features (feature_set, sha256, view, vector) SELECT $1, sha256, view, vector FROM feature_staging
     ON CONFLICT (feature_set, sha256, view) DO NOTHING`,
    [featureSet],
  );
  await client.query(
    `DELETE FROM ${SCHEMA}.failures WHERE feature_set = $1 AND sha256 IN (SELECT sha256 FROM feature_staging)`,
    [featureSet],
  );
  await client.query('DROP TABLE feature_staging');
  if (batch.failures.length) {
    await client.query(
      `INSERT INTO ${SCHEMA}.failures (feature_set, sha256, path, error)
       SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])
       ON CONFLICT (feature_set, sha256) DO UPDATE SET path = excluded.path, error = excluded.error`,
      [featureSet, batch.failures.map((f) => f.sha256), batch.failures.map((f) => f.path), batch.failures.map((f) => f.error)],
    );
  }
  return inserted.rowCount ?? 0;
}

/**
 * Feature vectors of one view by content hash: all of the set's, or only those in `hashes`.
 * One binary COPY streams them; each vector is copied out of the stream into its own Float32Array.
 */
export async function loadVectors(
  pool: PgPool,
  featureSet: string,
  hashes?: readonly string[],
  view = 'original',
): Promise<Map<string, Float32Array>> {
  const wanted = hashes && new Set(hashes);
  const vectors = new Map<string, Float32Array>();
  const slab = new VectorSlab();
  const decoder = new CopyRowDecoder(([sha256, vector]) => {
    const key = sha256!.toString('utf8');
    if (!wanted || wanted.has(key)) vectors.set(key, slab.copy(vector!));
  });
  const client = await pool.connect();
  try {
    // COPY takes no parameters: the id goes in as a quoted literal.
    const stream = client.query(
      copyTo(
        `COPY (SELECT sha256, vector FROM ${SCHEMA}.features WHERE feature_set = ${client.escapeLiteral(featureSet)} AND view = ${client.escapeLiteral(view)}) TO STDOUT (FORMAT binary)`,
      ),
    );
    for await (const chunk of stream) decoder.push(chunk as Buffer);
    decoder.finish();
  } finally {
    client.release();
  }
  return vectors;
}

/**
 * Copies vectors into shared blocks of 1024 and hands out views: one allocation per block
 * instead of one per vector (tens of thousands of small buffers made the read 4x slower).
 */
class VectorSlab {
  private block = new Float32Array(0);
  private used = 0;

  copy(bytes: Uint8Array): Float32Array {
    const length = bytes.byteLength / 4;
    if (this.used + length > this.block.length) {
      this.block = new Float32Array(Math.max(length * 1024, length));
      this.used = 0;
    }
    const view = this.block.subarray(this.used, this.used + length);
    // Byte copy: the row's bytes need not be 4-byte aligned within the received chunk.
    new Uint8Array(view.buffer, view.byteOffset, bytes.byteLength).set(bytes);
    this.used += length;
    return view;
  }
}
