import test from 'ava';
import { chmodSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connectPostgres, guardPostgres, redact, serverAddress } from '../cache/postgres/connect.js';
import { migrate } from '../cache/postgres/schema.js';
import { UserError } from '../core/errors.js';
import { isHttpUrl, isPostgresUrl } from '../core/urls.js';
import { PASSWORD_ROLE, postgresSuite } from './helpers/postgres.js';
import { tempDir } from './helpers/shared.js';

const pg = postgresSuite();

test('a --db value is a PostgreSQL URL only with a postgres:// or postgresql:// scheme', (t) => {
  for (const url of ['postgres://h/db', 'postgresql://u:p@h:5433/db', 'POSTGRES://h', 'postgresql:///db?host=/run/postgresql']) {
    t.true(isPostgresUrl(url), url);
    t.false(isHttpUrl(url), url);
  }
  for (const path of ['runs/cache.sqlite', '/abs/postgres.sqlite', 'postgres.sqlite', 'postgres:/x', 'http://h/x', 'C:\\postgres']) {
    t.false(isPostgresUrl(path), path);
  }
  t.true(isHttpUrl('HTTPS://example.org/model.json'));
});

test('URLs are reported without their password, and with libpq defaults filled in', (t) => {
  t.is(redact('postgres://me:s3cr%40t@db.example:6543/feat'), 'postgres://me:***@db.example:6543/feat');
  t.is(redact('postgres://me@db.example/feat'), 'postgres://me@db.example/feat');
  t.deepEqual(serverAddress('postgres://me@db.example/feat'), { host: 'db.example', port: 5432, user: 'me', database: 'feat' });
  t.deepEqual(serverAddress('postgresql://u@/d?host=/run/pg&port=6000'), { host: '/run/pg', port: 6000, user: 'u', database: 'd' });
  t.throws(() => serverAddress('postgres://me:pw@db:port/x'), { message: /^--db postgres:\/\/me:\*\*\*@db:port\/x: not a valid PostgreSQL URL/ });
});

/** Runs `fn` with environment variables set, restoring them after (tests in this file are serial). */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  }
}

const NO_PASSWORD_ENV = { PGPASSWORD: undefined, PGPASSFILE: '/nonexistent/pgpass' };

async function connectError(url: string): Promise<string> {
  const error = await connectPostgres(url, { connectTimeoutMs: 5000 }).then(
    async (pool) => {
      await pool.end();
      throw new Error(`connected to ${url}`);
    },
    (e: unknown) => e,
  );
  if (!(error instanceof UserError)) throw error;
  return error.message;
}

pg.serial('a trusted URL connects and queries', async (t, cluster) => {
  const pool = await connectPostgres(cluster.url());
  t.teardown(() => pool.end());
  const { rows } = await pool.query('SELECT 1 + 1 AS two');
  t.is(rows[0].two, 2);
});

pg.serial('the password comes from the URL, PGPASSWORD or the password file', async (t, cluster) => {
  const { user, password } = PASSWORD_ROLE;
  const base = `127.0.0.1:${cluster.port}/postgres`;
  await withEnv(NO_PASSWORD_ENV, async () => {
    const pool = await connectPostgres(`postgres://${user}:${encodeURIComponent(password)}@${base}`);
    t.is((await pool.query('SELECT current_user AS u')).rows[0].u, user);
    await pool.end();
  });
  await withEnv({ PGPASSWORD: password, PGPASSFILE: '/nonexistent/pgpass' }, async () => {
    const pool = await connectPostgres(`postgres://${user}@${base}`);
    t.is((await pool.query('SELECT current_user AS u')).rows[0].u, user);
    await pool.end();
  });
  const passFile = join(tempDir(t), 'pgpass');
  writeFileSync(passFile, `127.0.0.1:${cluster.port}:*:${user}:${password}\n`);
  chmodSync(passFile, 0o600); // libpq (and pgpass) ignore a file others can read
  await withEnv({ PGPASSWORD: undefined, PGPASSFILE: passFile }, async () => {
    const pool = await connectPostgres(`postgres://${user}@${base}`);
    t.is((await pool.query('SELECT current_user AS u')).rows[0].u, user);
    await pool.end();
  });
});

pg.serial('a wrong or missing password is one line naming server and user, never the password', async (t, cluster) => {
  const server = `127.0.0.1:${cluster.port}`;
  await withEnv(NO_PASSWORD_ENV, async () => {
    const wrong = await connectError(`postgres://${PASSWORD_ROLE.user}:wrong-secret-123@${server}/postgres`);
    t.is(wrong, `PostgreSQL server ${server} rejected the password of user "${PASSWORD_ROLE.user}" (URL, PGPASSWORD or ~/.pgpass)`);
    t.false(wrong.includes('wrong-secret-123'));
    const missing = await connectError(`postgres://${PASSWORD_ROLE.user}@${server}/postgres`);
    t.is(missing, `PostgreSQL server ${server} wants a password for user "${PASSWORD_ROLE.user}": put it in the URL, PGPASSWORD or ~/.pgpass`);
  });
});

pg.serial('a missing database is named with its server', async (t, cluster) => {
  const message = await connectError(cluster.url('no_such_db'));
  t.is(message, `PostgreSQL server 127.0.0.1:${cluster.port} has no database "no_such_db" (create it, or name another in --db)`);
});

pg.serial('an unreachable server is one line naming host and port', async (t) => {
  // A port that was free a moment ago: nothing listens there.
  const port = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
  const message = await connectError(`postgres://someone:pw-not-shown@127.0.0.1:${port}/db`);
  t.is(message, `cannot connect to PostgreSQL server 127.0.0.1:${port}: connection refused (is it running and listening there?)`);
  const unknown = await connectError('postgres://someone@no-such-host.invalid:5544/db');
  t.is(unknown, 'cannot connect to PostgreSQL server no-such-host.invalid:5544: unknown host no-such-host.invalid');
});

pg.serial('failures during work are one line naming the server: no privilege, connection killed', async (t, cluster) => {
  cluster.psql('CREATE ROLE plain_user LOGIN');
  const url = `postgres://plain_user@127.0.0.1:${cluster.port}/postgres`;
  const pool = await connectPostgres(url);
  t.teardown(() => pool.end());
  const address = serverAddress(url);
  await t.throwsAsync(guardPostgres(address, () => migrate(pool)), {
    message: `PostgreSQL server 127.0.0.1:${cluster.port} does not allow user "plain_user" this on database "postgres": permission denied for database postgres`,
  });
  const admin = await connectPostgres(cluster.url());
  t.teardown(() => admin.end());
  const sleeping = guardPostgres(address, () => pool.query('SELECT pg_sleep(30)'));
  // Terminate the sleeping session from another connection, as an administrator would.
  for (let tries = 0; ; tries++) {
    const { rowCount } = await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'plain_user' AND query LIKE 'SELECT pg_sleep%'`,
    );
    if (rowCount || tries > 50) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await t.throwsAsync(sleeping, {
    message: `PostgreSQL server 127.0.0.1:${cluster.port} closed the connection (shut down or terminated by an administrator)`,
  });
});
