import test from 'ava';
import { floatBytes } from '../cache/blobs.js';
import { connectPostgres, type PgPool } from '../cache/postgres/connect.js';
import { CopyRowDecoder, encodeCopyRows } from '../cache/postgres/copy-binary.js';
import { ensureFeatureSet, extractedHashes, listItems, loadVectors, replaceItems, writeBatch } from '../cache/postgres/features.js';
import { SCHEMA, SCHEMA_VERSION, migrate, schemaVersion } from '../cache/postgres/schema.js';
import { inTransaction } from '../cache/postgres/transaction.js';
import { type Cluster, freshDatabase, postgresSuite } from './helpers/postgres.js';

const pg = postgresSuite();

const SET = {
  id: 'fs-test',
  modelSource: 'test',
  weightsSha256: 'ab'.repeat(32),
  architecture: 'mobilenetv2',
  alpha: 1,
  height: 224,
  width: 224,
  resize: 'fill',
  preprocessing: 'x/127.5-1',
  backend: 'onnx',
  dim: 1280,
};

/** A vector whose every float is a function of (seed, index), including the awkward values. */
function vector(seed: number, dim = 1280): Float32Array {
  const v = new Float32Array(dim);
  for (let i = 0; i < dim; i++) v[i] = Math.sin(seed * 7919 + i) * 10 ** ((i % 9) - 4);
  v[0] = seed % 2 ? -0 : NaN;
  v[1] = seed % 3 ? Infinity : 1.4e-45; // subnormal
  return v;
}

async function store(t: { teardown: (fn: () => Promise<void>) => void }, cluster: Cluster): Promise<PgPool> {
  const pool = await connectPostgres(freshDatabase(cluster));
  t.teardown(() => pool.end());
  await migrate(pool);
  await ensureFeatureSet(pool, SET);
  return pool;
}

test('binary COPY rows survive any cut into chunks, and a cut stream is refused', (t) => {
  const rows = [
    ['a', Buffer.from([1, 2, 3])],
    ['ü€𝄞', Buffer.alloc(0)],
    [null, floatBytes(vector(3, 7))],
    // Rows longer than the decoder's first try at completing a cut row (8 KiB), then a short one.
    ['v1280', floatBytes(vector(4))],
    ['v6000', floatBytes(vector(5, 6000))],
    ['end', Buffer.from([9])],
  ] as const;
  const payload = encodeCopyRows(rows.map((r) => [...r]));
  for (const step of [1, 2, 5, 13, 4999, 5143, 8191, 30_000, payload.length]) {
    const seen: (string | null)[][] = [];
    const decoder = new CopyRowDecoder((fields) => seen.push(fields.map((f) => (f === null ? null : f.toString('hex')))));
    for (let at = 0; at < payload.length; at += step) decoder.push(payload.subarray(at, at + step));
    decoder.finish();
    t.deepEqual(seen, rows.map((r) => r.map((f) => (f === null ? null : Buffer.from(f).toString('hex')))), `chunks of ${step}`);
  }
  const cut = new CopyRowDecoder(() => {});
  cut.push(payload.subarray(0, payload.length - 3));
  t.throws(() => cut.finish(), { message: 'binary COPY data ended early' });
});

pg.test('migrations apply once, also when several processes start together, and a newer schema is refused', async (t, cluster) => {
  const url = freshDatabase(cluster);
  const pools = await Promise.all([1, 2, 3, 4].map(() => connectPostgres(url)));
  t.teardown(() => Promise.all(pools.map((p) => p.end())).then(() => {}));
  await Promise.all(pools.map((pool) => migrate(pool)));
  await migrate(pools[0]);
  t.is(await schemaVersion(pools[0]), SCHEMA_VERSION);
  const { rows } = await pools[0].query(`SELECT version FROM ${SCHEMA}.schema_version ORDER BY version`);
  t.deepEqual(rows.map((r) => r.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
  await pools[0].query(`INSERT INTO ${SCHEMA}.schema_version (version) VALUES ($1)`, [SCHEMA_VERSION + 1]);
  await t.throwsAsync(migrate(pools[1]), {
    message: `the PostgreSQL feature store was written by a newer pipeline (schema ${SCHEMA_VERSION + 1} > ${SCHEMA_VERSION})`,
  });
});

pg.test('vectors round-trip bitwise, stored as the same bytes as SQLite, never duplicated', async (t, cluster) => {
  const pool = await store(t, cluster);
  const features = Array.from({ length: 300 }, (_, i) => ({ sha256: `h${String(i).padStart(4, '0')}`, vector: vector(i) }));
  const failures = [{ sha256: 'bad1', path: 'x/bad1.jpg', error: 'empty file' }];
  t.is(await inTransaction(pool, (c) => writeBatch(c, SET.id, { features: features.slice(0, 200), failures })), 200);
  // Overlapping rerun: only the 100 new ones are written.
  t.is(await inTransaction(pool, (c) => writeBatch(c, SET.id, { features: features.slice(100), failures: [] })), 100);
  const { rows } = await pool.query(`SELECT count(*)::int AS n, count(DISTINCT sha256)::int AS d FROM ${SCHEMA}.features`);
  t.deepEqual(rows[0], { n: 300, d: 300 });
  const loaded = await loadVectors(pool, SET.id);
  t.is(loaded.size, 300);
  for (const { sha256, vector: v } of features) t.true(Buffer.from(floatBytes(loaded.get(sha256)!)).equals(floatBytes(v)), sha256);
  const raw = await pool.query(`SELECT vector FROM ${SCHEMA}.features WHERE sha256 = 'h0007'`);
  t.true((raw.rows[0].vector as Buffer).equals(floatBytes(features[7].vector)));
  const some = await loadVectors(pool, SET.id, ['h0001', 'h0299', 'missing']);
  t.deepEqual([...some.keys()].sort(), ['h0001', 'h0299']);
  t.deepEqual((await extractedHashes(pool, SET.id)).size, 300);
  // A failure is cleared when its content later gets a vector.
  const { rows: before } = await pool.query(`SELECT sha256, path, error FROM ${SCHEMA}.failures`);
  t.deepEqual(before, failures);
  await inTransaction(pool, (c) => writeBatch(c, SET.id, { features: [{ sha256: 'bad1', vector: vector(9) }], failures: [] }));
  t.is((await pool.query(`SELECT * FROM ${SCHEMA}.failures`)).rowCount, 0);
});

pg.test('a batch written outside a transaction fails loudly instead of storing nothing', async (t, cluster) => {
  const pool = await store(t, cluster);
  const client = await pool.connect();
  t.teardown(() => client.release());
  await t.throwsAsync(writeBatch(client, SET.id, { features: [{ sha256: 'h', vector: vector(1) }], failures: [] }), {
    message: /relation "feature_staging" does not exist/,
  });
});

pg.test('a failed transaction leaves no vectors behind', async (t, cluster) => {
  const pool = await store(t, cluster);
  await t.throwsAsync(
    inTransaction(pool, async (c) => {
      await writeBatch(c, SET.id, { features: [{ sha256: 'h1', vector: vector(1) }], failures: [] });
      throw new Error('worker died');
    }),
    { message: 'worker died' },
  );
  t.is((await loadVectors(pool, SET.id)).size, 0);
});

pg.test('dataset listings are replaced whole and listed in byte order', async (t, cluster) => {
  const pool = await store(t, cluster);
  const items = [
    { path: 'b/Zeta.jpg', label: 'b', split: 'train', sha256: 's1' },
    { path: 'a/ä.jpg', label: 'a', split: null, sha256: 's2' },
    { path: 'a/B.jpg', label: 'a', split: 'test', sha256: 's3' },
  ];
  await replaceItems(pool, SET.id, items);
  t.deepEqual((await listItems(pool, SET.id)).map((i) => i.path), ['a/B.jpg', 'a/ä.jpg', 'b/Zeta.jpg']);
  t.deepEqual(await listItems(pool, SET.id), [...items].sort((a, b) => (Buffer.from(a.path) < Buffer.from(b.path) ? -1 : 1)));
  await replaceItems(pool, SET.id, items.slice(0, 1));
  t.deepEqual(await listItems(pool, SET.id), items.slice(0, 1));
});
