/** Transactions and session locks on pooled connections. */
import type { PgClient, PgPool } from './connect.js';

/** One transaction on one pooled connection: committed when `work` resolves, rolled back when it throws. */
export async function inTransaction<T>(pool: PgPool, work: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // A connection that cannot even roll back is discarded instead of returned to the pool.
    await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError));
    throw error;
  } finally {
    client.release(broken);
  }
}

/**
 * Runs `work` (on any pooled connection) while this process holds the session advisory
 * lock `key` on another one: other processes asking for the same key wait their turn. A
 * process that dies releases its lock with its connection.
 */
export async function underSessionLock<T>(pool: PgPool, key: string, work: () => Promise<T>): Promise<T> {
  const lock = await pool.connect();
  try {
    await lock.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [key]);
    return await work();
  } finally {
    await lock.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]).catch(() => {});
    lock.release();
  }
}
