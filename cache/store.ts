/**
 * The one storage interface every command works through, with two implementations: the
 * embedded SQLite file (cache/sqlite-store.ts) and a shared PostgreSQL server
 * (cache/postgres/store.ts). `openStore` is the registry: the `--db` / `cache.db` value
 * alone decides which one serves. Every method is async because the server is; the SQLite
 * one answers at once. All SQL stays behind this interface, in cache/.
 */
import { type Db, guardDatabase } from './database.js';
import { isPostgresUrl, redact } from '../core/urls.js';
import { openSqliteStore, sqliteStore } from './sqlite-store.js';
import type { OpenStoreOptions, Store } from './store-types.js';

export type * from './store-types.js';

/** The registry: a postgres:// or postgresql:// URL opens the server store, anything else the SQLite file. */
export async function openStore(location: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (isPostgresUrl(location)) {
    const { openPostgresStore } = await import('./postgres/store.js');
    return openPostgresStore(location, options);
  }
  return openSqliteStore(location, options);
}

/** Runs work on the store at `location` (before or after opening it), failures a user can act on as one line naming it. */
export async function guardStore<T>(location: string, work: () => Promise<T>): Promise<T> {
  if (isPostgresUrl(location)) {
    const { guardPostgres, serverAddress } = await import('./postgres/connect.js');
    return guardPostgres(serverAddress(location), work);
  }
  return guardDatabase(location, work);
}

/** How output names a store: a file's path as given, a URL without its password. */
export const storeName = (location: string): string => (isPostgresUrl(location) ? redact(location) : location);

/** Stages take a store, or (library callers and tests) an open SQLite database, which is wrapped. */
export type StoreLike = Store | Db;

export const storeOf = (db: StoreLike): Store => ('kind' in db && typeof (db as Store).loadSplit === 'function' ? (db as Store) : sqliteStore(db as Db));
