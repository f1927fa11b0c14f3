/**
 * PostgreSQL for tests: one throwaway cluster per test file (started by the first test that
 * asks, stopped after the file's last test, and on exit if the file dies). Without the
 * server binaries every PostgreSQL test is registered as skipped, with the reason in its
 * title, so a machine without PostgreSQL never reports them as passed.
 */
import test, { type ExecutionContext } from 'ava';
import { type Cluster, postgresUnavailable, startCluster } from './postgres-cluster.js';

export { PASSWORD_ROLE, type Cluster } from './postgres-cluster.js';

export const POSTGRES_UNAVAILABLE = postgresUnavailable();

type PgImplementation = (t: ExecutionContext, cluster: Cluster) => Promise<void> | void;

/**
 * Declares the file's PostgreSQL tests. Call once at the top of a test file; returns
 * registrars for concurrent and serial tests that receive the file's cluster.
 */
export function postgresSuite(): { test: (title: string, fn: PgImplementation) => void; serial: (title: string, fn: PgImplementation) => void } {
  if (POSTGRES_UNAVAILABLE) {
    const skipped = (title: string) => test.skip(`${title} (skipped: ${POSTGRES_UNAVAILABLE})`, () => {});
    return { test: skipped, serial: skipped };
  }
  let cluster: Promise<Cluster> | undefined;
  const get = () => (cluster ??= startCluster());
  test.after.always(async () => {
    if (cluster) (await cluster.catch(() => undefined))?.stop();
  });
  return {
    test: (title, fn) => test(title, async (t) => fn(t, await get())),
    serial: (title, fn) => test.serial(title, async (t) => fn(t, await get())),
  };
}

let databaseCounter = 0;

/** A fresh empty database in the cluster for one test; its URL. */
export function freshDatabase(cluster: Cluster, prefix = 'test'): string {
  databaseCounter += 1;
  return cluster.createDatabase(`${prefix}_${process.pid}_${databaseCounter}`);
}
