/**
 * Perceptual hashes for the audit: `extract` stores one per image from the pixels it
 * decodes; images extracted before it did have none, and get one here, computed once from
 * the files and stored. The pixels are decoded exactly as extract decodes them for the
 * feature set (decodeImage: the original view at the input size), so the hash is the one
 * extract would have stored.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import pLimit from 'p-limit';
import type { Store } from '../../cache/store.js';
import type { FeatureSet } from '../../cache/features.js';
import { messageOf } from '../../core/errors.js';
import { type Log, type StartProgress, noProgress, quietLog } from '../../core/log.js';
import { decodeImage } from '../../data/images.js';
import { perceptualHash } from '../../data/phash.js';

/** Rows stored per transaction while hashing, so an interrupted audit keeps what it hashed. */
const SAVE_EVERY = 256;

export interface HashedItem {
  readonly path: string;
  readonly sha256: string;
}

/**
 * The hash of every content among `items` that could be read; `root` is where the
 * dataset's relative paths live. Files that cannot be read are logged and left without a
 * hash (such an image can then only be an exact duplicate).
 */
export async function perceptualHashes(
  db: Store,
  featureSet: FeatureSet,
  items: readonly HashedItem[],
  root: string | null,
  log: Log = quietLog,
  startProgress: StartProgress = noProgress,
): Promise<{ hashes: Map<string, string>; computed: number; unreadable: number }> {
  const hashes = await db.loadPerceptualHashes(items.map((item) => item.sha256));
  const pending = new Map<string, HashedItem>();
  for (const item of items) if (!hashes.has(item.sha256) && !pending.has(item.sha256)) pending.set(item.sha256, item);
  if (pending.size === 0) return { hashes, computed: 0, unreadable: 0 };
  if (root === null) {
    log(`${pending.size} images have no perceptual hash and the dataset folder is unknown: they are compared by content only`);
    return { hashes, computed: 0, unreadable: pending.size };
  }
  log(`computing perceptual hashes of ${pending.size} images (once; stored in the cache)`);
  const size = { height: featureSet.height, width: featureSet.width };
  const resize = featureSet.resize as Parameters<typeof decodeImage>[2];
  const progress = startProgress('perceptual hashes', pending.size, 'images');
  const limit = pLimit(availableParallelism());
  let batch: { sha256: string; phash: string }[] = [];
  const failures: string[] = [];
  try {
    await Promise.all(
      [...pending.values()].map((item) =>
        limit(async () => {
          try {
            const pixels = await decodeImage(await readFile(resolve(root, item.path)), size, resize);
            const phash = perceptualHash(pixels, size.width, size.height);
            hashes.set(item.sha256, phash);
            batch.push({ sha256: item.sha256, phash });
            if (batch.length >= SAVE_EVERY) {
              const full = batch;
              batch = [];
              await db.savePerceptualHashes(full);
            }
          } catch (error) {
            failures.push(`${item.path}: ${messageOf(error)}`);
          } finally {
            progress.advance(1);
          }
        }),
      ),
    );
    await db.savePerceptualHashes(batch);
  } finally {
    progress.stop();
  }
  if (failures.length > 0) {
    log(`${failures.length} images could not be read for their perceptual hash (e.g. ${failures[0]}): they are compared by content only`);
  }
  return { hashes, computed: pending.size - failures.length, unreadable: failures.length };
}
