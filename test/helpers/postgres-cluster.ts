/**
 * A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's postgresql-15 binaries): initdb in
 * a temp folder, started on an unused port, stopped and removed by `stop()` and in any case
 * when this process exits or is interrupted. No ava here, so benchmarks can use it too.
 *
 * PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
 * (the temp folder is handed to it and every server command runs through runuser).
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export const PG_BIN = process.env.PIPELINE_PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresUnavailable(): string | undefined {
  if (!existsSync(join(PG_BIN, 'initdb')) || !existsSync(join(PG_BIN, 'pg_ctl'))) {
    return `no PostgreSQL server binaries in ${PG_BIN} (Debian package postgresql-15)`;
  }
  if (userInfo().uid === 0 && spawnSync('id', ['-u', 'postgres']).status !== 0) {
    return 'running as root without a `postgres` user to run the server as';
  }
  return undefined;
}

/** A role that must log in with a password (every other connection is trusted). */
export const PASSWORD_ROLE = { user: 'pipeline_pw', password: 'right-horse-battery' } as const;

export interface Cluster {
  readonly host: string;
  readonly port: number;
  /** postgres://postgres@127.0.0.1:PORT/DB (trusted, no password). */
  url(database?: string): string;
  /** Runs SQL through psql as the superuser; returns stdout (unaligned, tuples only). */
  psql(sql: string, database?: string): string;
  /** A fresh empty database; returns its URL. */
  createDatabase(name: string): string;
  stop(): void;
}

const asServerUser = (command: string, args: string[]) =>
  userInfo().uid === 0 ? { command: 'runuser', args: ['-u', 'postgres', '--', command, ...args] } : { command, args };

function run(command: string, args: string[], what: string): string {
  const wrapped = asServerUser(command, args);
  const result = spawnSync(wrapped.command, wrapped.args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${what} failed: ${(result.stderr || result.stdout || String(result.error)).trim()}`);
  return result.stdout;
}

async function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface ClusterOptions {
  /** fsync as a production server does (benchmarks); tests run without it. */
  readonly durable?: boolean;
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const unavailable = postgresUnavailable();
  if (unavailable) throw new Error(unavailable);
  const dir = mkdtempSync(join(tmpdir(), 'pipeline-pg-'));
  if (userInfo().uid === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout);
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout);
    chownSync(dir, uid, gid);
  }
  const data = join(dir, 'data');
  let started = false;
  const stop = () => {
    if (started) {
      started = false;
      const wrapped = asServerUser(join(PG_BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']);
      spawnSync(wrapped.command, wrapped.args, { stdio: 'ignore' });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    stop();
    process.kill(process.pid, signal);
  };
  process.once('exit', stop);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    run(join(PG_BIN, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'], 'initdb');
    // First match wins: the password role must authenticate, everyone else is trusted.
    writeFileSync(
      join(data, 'pg_hba.conf'),
      [
        'local all all trust',
        `host all ${PASSWORD_ROLE.user} 127.0.0.1/32 scram-sha-256`,
        'host all all 127.0.0.1/32 trust',
        '',
      ].join('\n'),
    );
    let port = 0;
    for (let attempt = 0; ; attempt++) {
      port = await unusedPort();
      const serverOptions = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=${options.durable ? 'on' : 'off'} -c max_connections=200`;
      const wrapped = asServerUser(join(PG_BIN, 'pg_ctl'), ['-D', data, '-o', serverOptions, '-l', join(dir, 'server.log'), '-w', 'start']);
      const result = spawnSync(wrapped.command, wrapped.args, { encoding: 'utf8' });
      if (result.status === 0) break;
      // Another process may have taken the port between our probe and the server's bind.
      if (attempt === 3) throw new Error(`pg_ctl start failed: ${result.stderr || result.stdout}`);
    }
    started = true;
    const psql = (sql: string, database = 'postgres') =>
      run('psql', ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', database, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql], 'psql');
    psql(`CREATE ROLE ${PASSWORD_ROLE.user} LOGIN SUPERUSER PASSWORD '${PASSWORD_ROLE.password}'`);
    const url = (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`;
    return {
      host: '127.0.0.1',
      port,
      url,
      psql,
      createDatabase(name) {
        psql(`CREATE DATABASE "${name}"`);
        return url(name);
      },
      stop() {
        stop();
        process.off('exit', stop);
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      },
    };
  } catch (error) {
    stop();
    throw error;
  }
}
