/**
 * Opening a PostgreSQL server named by a `postgres://` URL. The password comes from the
 * URL, else PGPASSWORD, else the password file (PGPASSFILE or ~/.pgpass), as libpq does.
 * Every failure a user can fix is one line naming the server (host:port) and, where it
 * matters, the user or database; the password itself is never printed.
 */
import pg from 'pg';
import { parse } from 'pg-connection-string';
import pgpass from 'pgpass';
import { userInfo } from 'node:os';
import { UserError, messageOf } from '../../core/errors.js';
import { isPostgresUrl, redact } from '../../core/urls.js';

export { redact };

export type PgPool = pg.Pool;
export type PgClient = pg.PoolClient;

export interface ServerAddress {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
}

export interface ConnectOptions {
  /** Connections in the pool. */
  readonly max?: number;
  /** How long to wait for the server to answer at all. */
  readonly connectTimeoutMs?: number;
}

/** Where a URL points, with libpq's defaults for what it leaves out (PGHOST, PGPORT, PGUSER, PGDATABASE). */
export function serverAddress(url: string): ServerAddress {
  let parsed: ReturnType<typeof parse> | undefined;
  try {
    if (isPostgresUrl(url)) parsed = parse(url);
  } catch {
    // reported below
  }
  if (!parsed) {
    throw new UserError(`--db ${redact(url)}: not a valid PostgreSQL URL (expected postgres://user[:password]@host[:port]/database)`);
  }
  const user = parsed.user || process.env.PGUSER || userInfo().username;
  return {
    host: parsed.host || process.env.PGHOST || 'localhost',
    port: Number(parsed.port || process.env.PGPORT || 5432),
    user,
    database: parsed.database || process.env.PGDATABASE || user,
  };
}


/** `host:port`, as messages name a server (a socket folder is named as-is). */
export function describeServer(address: ServerAddress): string {
  return address.host.startsWith('/') ? `${address.host} (port ${address.port})` : `${address.host}:${address.port}`;
}

/**
 * A pool on the server of `url`, with one connection made to prove the server, the
 * credentials and the database are all there. Throws a one-line UserError otherwise.
 */
export async function connectPostgres(url: string, options: ConnectOptions = {}): Promise<PgPool> {
  const address = serverAddress(url);
  // Not `connectionString`: pg would let the URL's empty password override the lookup below.
  const { password: urlPassword, ...fromUrl } = parse(url);
  const pool = new pg.Pool({
    ...(fromUrl as pg.PoolConfig),
    host: address.host,
    port: address.port,
    user: address.user,
    database: address.database,
    // Asked only when the server wants one. pg's own password-file lookup is deprecated.
    password: urlPassword || process.env.PGPASSWORD || (() => passwordFromFile(address)),
    max: options.max ?? 4,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    application_name: 'pipeline',
  });
  // An idle connection dropped by the server must not crash the process; the next query reports it.
  pool.on('error', () => {});
  try {
    const client = await pool.connect();
    client.release();
  } catch (error) {
    await pool.end().catch(() => {});
    throw connectionError(error, address);
  }
  return pool;
}

function passwordFromFile(address: ServerAddress): Promise<string> {
  return new Promise((resolve) => {
    pgpass({ host: address.host, port: address.port, database: address.database, user: address.user }, (password) =>
      // No entry: an empty password makes the server say "password authentication failed".
      resolve(password ?? ''),
    );
  });
}

/** A connection failure as one line; anything unrecognised keeps the driver's message. */
export function connectionError(error: unknown, address: ServerAddress): UserError {
  const server = `PostgreSQL server ${describeServer(address)}`;
  const code = (error as { code?: unknown }).code;
  const message = messageOf(error);
  switch (code) {
    case 'ECONNREFUSED':
      return new UserError(`cannot connect to ${server}: connection refused (is it running and listening there?)`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UserError(`cannot connect to ${server}: unknown host ${address.host}`);
    case 'ENOENT':
      return new UserError(`cannot connect to ${server}: no server socket in ${address.host}`);
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new UserError(`cannot connect to ${server}: ${code === 'ETIMEDOUT' ? 'no answer' : 'unreachable'}`);
    case '28P01':
      return new UserError(`${server} rejected the password of user "${address.user}" (URL, PGPASSWORD or ~/.pgpass)`);
    case '28000':
      return new UserError(`${server} does not let user "${address.user}" in: ${message}`);
    case '3D000':
      return new UserError(`${server} has no database "${address.database}" (create it, or name another in --db)`);
  }
  if (/timeout/i.test(message)) return new UserError(`cannot connect to ${server}: no answer (timed out)`);
  if (/password must be a (non-empty )?string/i.test(message)) {
    return new UserError(`${server} wants a password for user "${address.user}": put it in the URL, PGPASSWORD or ~/.pgpass`);
  }
  return new UserError(`cannot use ${server}: ${message.split('\n')[0]}`);
}

/**
 * Runs work against the server, turning the failures a user can act on (no privilege,
 * full disk, read-only standby, server shut down or connection lost) into one line that
 * names the server. Anything else is rethrown as it is.
 */
export async function guardPostgres<T>(address: ServerAddress, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    const reason = operationalFailure(error, address);
    throw reason ? new UserError(`PostgreSQL server ${describeServer(address)} ${reason}`) : error;
  }
}

function operationalFailure(error: unknown, address: ServerAddress): string | undefined {
  if (error instanceof UserError) return undefined;
  const code = (error as { code?: unknown }).code;
  const message = messageOf(error);
  if (code === '42501') return `does not allow user "${address.user}" this on database "${address.database}": ${message}`;
  if (code === '53100') return 'is out of disk space (what was committed before is kept)';
  if (code === '25006') return 'is read-only (a standby?): point --db at the primary';
  if (code === '57P01' || code === '57P02') return 'closed the connection (shut down or terminated by an administrator)';
  if (code === '57P03') return 'is starting up or shutting down: try again shortly';
  if (code === 'ECONNRESET' || code === 'EPIPE' || /Connection terminated/i.test(message)) return 'dropped the connection';
  return undefined;
}
