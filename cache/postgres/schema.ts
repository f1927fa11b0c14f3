/**
 * The feature store's tables on a PostgreSQL server, in their own schema `pipeline` (pg-boss
 * keeps its queues in `pgboss`). The tables mirror the SQLite cache's: vectors are the same
 * little-endian float32 bytes, in bytea. Migrations are numbered; `schema_version` records
 * the ones applied, and an advisory lock makes processes starting together apply each once.
 */
import { UserError } from '../../core/errors.js';
import type { PgPool } from './connect.js';
import { inTransaction } from './transaction.js';

export const SCHEMA = 'pipeline';

/** Index i migrates from version i to i + 1. Never edit one that has shipped: append. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE ${SCHEMA}.feature_sets (
    id text PRIMARY KEY,
    model_source text NOT NULL,
    weights_sha256 text NOT NULL,
    architecture text NOT NULL,
    alpha double precision NOT NULL,
    height integer NOT NULL,
    width integer NOT NULL,
    resize text NOT NULL,
    preprocessing text NOT NULL,
    backend text NOT NULL,
    dim integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
  );
  -- Keyed by content, so a renamed or copied image is never extracted twice.
  CREATE TABLE ${SCHEMA}.features (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    sha256 text NOT NULL,
    vector bytea NOT NULL,
    PRIMARY KEY (feature_set, sha256)
  );
  -- A 1280-float vector (5 KiB) would be moved to the TOAST table (3 chunks, found through
  -- an index) above the default 2 KiB: keep rows up to a page inline, where a scan reads them.
  ALTER TABLE ${SCHEMA}.features SET (toast_tuple_target = 8160);
  ALTER TABLE ${SCHEMA}.features ALTER COLUMN vector SET STORAGE MAIN;
  CREATE TABLE ${SCHEMA}.failures (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    sha256 text NOT NULL,
    path text NOT NULL,
    error text NOT NULL,
    PRIMARY KEY (feature_set, sha256)
  );
  -- The dataset as the last extract saw it: which file has which label, split and content.
  CREATE TABLE ${SCHEMA}.dataset_items (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    path text NOT NULL,
    label text NOT NULL,
    split text,
    sha256 text NOT NULL,
    PRIMARY KEY (feature_set, path)
  );
  CREATE TABLE ${SCHEMA}.extract_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    dataset_root text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL,
    images integer NOT NULL,
    extracted integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    seconds double precision,
    images_per_second double precision
  );
  -- A distributed extraction: the images to extract cut into shards, planned once per listing.
  CREATE TABLE ${SCHEMA}.extract_plans (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    plan text NOT NULL,
    queue text NOT NULL,
    shards integer NOT NULL,
    images integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_set, plan)
  );
  -- completed_at is set in the transaction that writes the shard's vectors and completes its job.
  CREATE TABLE ${SCHEMA}.extract_shards (
    feature_set text NOT NULL,
    plan text NOT NULL,
    shard integer NOT NULL,
    images integer NOT NULL,
    job_id uuid NOT NULL,
    completed_at timestamptz,
    completed_by text,
    vectors_written integer,
    PRIMARY KEY (feature_set, plan, shard),
    FOREIGN KEY (feature_set, plan) REFERENCES ${SCHEMA}.extract_plans(feature_set, plan)
  );
  `,
  // 2: everything else the SQLite cache holds, so every command runs on the server: a vector
  // per view of an image (vectors stored before are of view 'original'), splits, sweeps with
  // their members and runs, perceptual hashes and audits; and the workers of a distributed
  // extraction, as they last reported, for `pipeline cache`.
  `
  ALTER TABLE ${SCHEMA}.features ADD COLUMN view text NOT NULL DEFAULT 'original';
  ALTER TABLE ${SCHEMA}.features DROP CONSTRAINT features_pkey;
  ALTER TABLE ${SCHEMA}.features ADD PRIMARY KEY (feature_set, sha256, view);
  CREATE TABLE ${SCHEMA}.splits (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    path text NOT NULL,
    split text NOT NULL CHECK (split IN ('train', 'val', 'test')),
    source text NOT NULL,
    PRIMARY KEY (feature_set, path)
  );
  CREATE TABLE ${SCHEMA}.sweeps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    config_hash text NOT NULL,
    config_json text NOT NULL,
    split_source text NOT NULL,
    trainer text NOT NULL,
    data_hash text,
    labels_json text,
    dataset_root text,
    images_left_out integer,
    status text NOT NULL,
    planned_runs integer NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    wall_seconds double precision
  );
  CREATE INDEX sweeps_by_config ON ${SCHEMA}.sweeps (feature_set, config_hash, data_hash);
  CREATE TABLE ${SCHEMA}.sweep_items (
    sweep_id bigint NOT NULL REFERENCES ${SCHEMA}.sweeps(id),
    split text NOT NULL CHECK (split IN ('train', 'val', 'test')),
    position integer NOT NULL,
    path text NOT NULL,
    label text NOT NULL,
    sha256 text NOT NULL,
    PRIMARY KEY (sweep_id, split, position)
  );
  CREATE TABLE ${SCHEMA}.sweep_runs (
    sweep_id bigint NOT NULL REFERENCES ${SCHEMA}.sweeps(id),
    run_key text NOT NULL,
    variant_key text NOT NULL,
    params_json text NOT NULL,
    seed integer NOT NULL,
    status text NOT NULL,
    best_epoch integer NOT NULL,
    epochs_run integer NOT NULL,
    train_loss double precision, train_accuracy double precision,
    val_loss double precision, val_accuracy double precision,
    test_loss double precision, test_accuracy double precision,
    macro_f1 double precision,
    per_class_json text NOT NULL,
    confusion_json text NOT NULL,
    curves_json text NOT NULL,
    test_probabilities bytea NOT NULL,
    weights_json text NOT NULL,
    weights bytea NOT NULL,
    train_seconds double precision NOT NULL,
    finished_at timestamptz NOT NULL,
    PRIMARY KEY (sweep_id, run_key)
  );
  CREATE TABLE ${SCHEMA}.image_hashes (
    sha256 text PRIMARY KEY,
    phash text NOT NULL
  );
  CREATE TABLE ${SCHEMA}.audits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    created_at timestamptz NOT NULL,
    config_json text NOT NULL,
    result_json text NOT NULL,
    seconds double precision NOT NULL
  );
  CREATE TABLE ${SCHEMA}.audit_map (
    audit_id bigint NOT NULL REFERENCES ${SCHEMA}.audits(id),
    path text NOT NULL,
    x double precision NOT NULL,
    y double precision NOT NULL,
    PRIMARY KEY (audit_id, path)
  );
  CREATE TABLE ${SCHEMA}.extract_workers (
    feature_set text NOT NULL REFERENCES ${SCHEMA}.feature_sets(id),
    worker text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    shards integer NOT NULL DEFAULT 0,
    PRIMARY KEY (feature_set, worker)
  );
  `,
  // 3: content hashes of dataset files by path, size and modification time, so the second
  // and later workers on a shared file system skip reading every file just to hash it.
  `
  CREATE TABLE ${SCHEMA}.file_hashes (
    root text NOT NULL,
    path text NOT NULL,
    size bigint NOT NULL,
    mtime_ms double precision NOT NULL,
    sha256 text NOT NULL,
    PRIMARY KEY (root, path)
  );
  `,
  // 4: sweeps over several sizes name each size's feature set; runs over several views keep
  // their test accuracy on the first view alone (the report's "without averaging").
  `
  ALTER TABLE ${SCHEMA}.sweeps ADD COLUMN size_sets_json text;
  ALTER TABLE ${SCHEMA}.sweep_runs ADD COLUMN test_accuracy_single_view double precision;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** An arbitrary constant: the advisory lock key under which migrations run. */
const MIGRATION_LOCK = 0x70697065;

/** Creates or upgrades the feature store's tables; refuses a schema newer than this code. */
export async function migrate(pool: PgPool): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${SCHEMA}.schema_version (version integer PRIMARY KEY, migrated_at timestamptz NOT NULL DEFAULT now())`,
    );
    const current = await schemaVersion(client);
    if (current > SCHEMA_VERSION) {
      throw new UserError(`the PostgreSQL feature store was written by a newer pipeline (schema ${current} > ${SCHEMA_VERSION})`);
    }
    for (let version = current; version < SCHEMA_VERSION; version++) {
      await client.query(MIGRATIONS[version]);
      await client.query(`INSERT INTO ${SCHEMA}.schema_version (version) VALUES ($1)`, [version + 1]);
    }
  });
}

/** The applied schema version (0 for a database without the feature store). */
export async function schemaVersion(db: { query: PgPool['query'] }): Promise<number> {
  const { rows } = await db.query<{ version: number | null }>(
    `SELECT CASE WHEN to_regclass('${SCHEMA}.schema_version') IS NULL THEN 0 END AS version`,
  );
  if (rows[0].version === 0) return 0;
  const applied = await db.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${SCHEMA}.schema_version`);
  return applied.rows[0].version ?? 0;
}
