/** `pipeline cache`: what the cache holds, one feature set per entry, and optionally its failures. */
import { type StoreLike, storeOf } from '../cache/store.js';
import { selectFeatureSet } from './feature-set.js';

export interface CacheListingOptions {
  /** Also list the files whose extraction failed, of this feature set (or the only one). */
  readonly failures?: { readonly featureSet: string | undefined };
}

/** The lines `pipeline cache` prints for the store at `dbPath`. */
export async function describeCache(db: StoreLike, dbPath: string, options: CacheListingOptions = {}): Promise<string[]> {
  const store = storeOf(db);
  const sets = await store.listFeatureSets();
  if (sets.length === 0) return [`${dbPath}: no feature sets yet (run \`pipeline extract\`)`];
  const lines = [`${dbPath}:`];
  for (const set of sets) {
    lines.push(
      `  ${set.id}  MobileNetV2 alpha ${set.alpha}  ${set.height}x${set.width} ${set.resize}  ${set.backend}  ` +
        `${set.features} vectors for ${set.images} images, ${set.failures} failures  created ${set.createdAt}`,
      `      views ${set.views.map((v) => `${v.view} (${v.vectors})`).join(', ') || 'none yet'}`,
      `      model ${set.modelSource}`,
    );
    // A server store shares extraction between workers: how far the newest plan is.
    const progress = await store.shards?.progress(set.id);
    if (progress) {
      lines.push(
        `      shards ${progress.done} done, ${progress.running} running, ${progress.waiting} waiting, ${progress.failed} failed ` +
          `of ${progress.shards} (${progress.imagesDone}/${progress.images} images); ` +
          `${progress.workersSeen} workers seen in the last minute, ${progress.imagesPerSecond.toFixed(1)} images/s`,
      );
    }
  }
  if (options.failures) {
    const set = await selectFeatureSet(store, options.failures.featureSet);
    for (const failure of await store.listFailures(set.id)) lines.push(`  ${failure.path}: ${failure.error}`);
  }
  return lines;
}
