/**
 * The content hash of every image of a dataset, which keys the cache: read from each file,
 * fetched from each URL, or taken from what the store recorded earlier.
 */
import { stat } from 'node:fs/promises';
import pLimit from 'p-limit';
import type { FailureRow } from '../cache/features.js';
import type { FileHash, FileHashes } from '../cache/store.js';
import { messageOf } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Dataset, DatasetItem } from '../data/dataset.js';
import { sha256 } from '../data/hash.js';
import type { FetchOptions } from '../data/manifest.js';
import { isRemote, readImageBytes } from '../data/open-dataset.js';

export interface HashedItem extends DatasetItem {
  readonly sha256: string;
}

/** Where a store records the hashes of URLs: under no dataset root, as a URL names its image wherever the manifest is. */
const URL_ROOT = '';
/** URLs fetched at once to hash them: the network's latency, not the cores, is what waits. */
const FETCH_CONCURRENCY = 16;

/**
 * The content hash of every image. A URL whose hash a store recorded (an earlier run or
 * another worker fetched it) is not fetched again; one that cannot be fetched becomes a
 * failure keyed by its URL's hash (no content has it), so it is listed, reported, and
 * fetched again by the next run, as is a URL whose recorded content failed (it may serve
 * something else now). On a server store, a file whose size and modification
 * time are as recorded is not read either: on a shared file system only the first worker
 * reads everything. A stale record cannot give a wrong vector: extraction checks each
 * image's bytes against its hash before using them.
 */
export async function hashItems(
  dataset: Dataset,
  options: { readonly concurrency: number; readonly fetch?: FetchOptions },
  db: { readonly kind: string; readonly fileHashes: FileHashes },
  failed: ReadonlySet<string>,
  log: Log,
): Promise<{ items: HashedItem[]; unfetched: FailureRow[] }> {
  // Workers started together take turns: the first reads (or fetches) everything, the
  // others then find it recorded instead of all reading the whole dataset at once.
  const hashAll = () => hashWithRecords({ dataset, options, records: db.fileHashes, recordFiles: db.kind === 'postgres', failed, log });
  return db.fileHashes.exclusive ? db.fileHashes.exclusive(dataset.root, hashAll) : hashAll();
}

interface HashJob {
  readonly dataset: Dataset;
  readonly options: { readonly concurrency: number; readonly fetch?: FetchOptions };
  readonly records: FileHashes;
  /** Trust recorded hashes of files with unchanged size and mtime (a server store), not only of URLs. */
  readonly recordFiles: boolean;
  /** Content hashes that failed: their URLs are fetched again. */
  readonly failed: ReadonlySet<string>;
  readonly log: Log;
}

async function hashWithRecords({ dataset, options, records, recordFiles, failed, log }: HashJob): Promise<{ items: HashedItem[]; unfetched: FailureRow[] }> {
  const readLimit = pLimit(options.concurrency);
  const fetchLimit = pLimit(FETCH_CONCURRENCY);
  const recordedFiles = recordFiles ? await records.load(dataset.root) : new Map<string, FileHash>();
  const recordedUrls = dataset.items.some(isRemote) ? await records.load(URL_ROOT) : new Map<string, FileHash>();
  const freshFiles: FileHash[] = [];
  const freshUrls: FileHash[] = [];
  const unfetched: FailureRow[] = [];
  let knownUrls = 0;
  const items = await Promise.all(
    dataset.items.map(async (item): Promise<HashedItem> => {
      if (isRemote(item)) {
        const url = item.absolutePath;
        const record = recordedUrls.get(url);
        if (record && !failed.has(record.sha256)) {
          knownUrls++;
          return { ...item, sha256: record.sha256 };
        }
        return fetchLimit(async () => {
          try {
            const bytes = await readImageBytes(item, options.fetch);
            const hashed = { ...item, sha256: sha256(bytes) };
            freshUrls.push({ path: url, size: bytes.length, mtimeMs: 0, sha256: hashed.sha256 });
            return hashed;
          } catch (error) {
            const failure = { sha256: sha256(`unfetched:${url}`), path: item.path, error: messageOf(error).split('\n')[0] };
            unfetched.push(failure);
            return { ...item, sha256: failure.sha256 };
          }
        });
      }
      return readLimit(async () => {
        if (!recordFiles) return { ...item, sha256: sha256(await readImageBytes(item)) };
        const info = await stat(item.absolutePath);
        const record = recordedFiles.get(item.path);
        if (record && record.size === info.size && record.mtimeMs === info.mtimeMs) return { ...item, sha256: record.sha256 };
        const hashed = { ...item, sha256: sha256(await readImageBytes(item)) };
        freshFiles.push({ path: item.path, size: info.size, mtimeMs: info.mtimeMs, sha256: hashed.sha256 });
        return hashed;
      });
    }),
  );
  await records.save(dataset.root, freshFiles);
  await records.save(URL_ROOT, freshUrls);
  const urls = freshUrls.length + unfetched.length;
  const files = dataset.items.length - knownUrls - urls;
  if (recordFiles && files > 0) log(`hashed ${freshFiles.length} files, ${files - freshFiles.length} unchanged since another worker hashed them`);
  if (urls + knownUrls > 0) log(`fetched ${urls} URLs to hash them (${unfetched.length} failed), ${knownUrls} known from earlier runs or workers`);
  return { items, unfetched };
}

