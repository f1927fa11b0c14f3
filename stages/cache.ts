/** `pipeline cache`: what the cache holds, one feature set per entry, and optionally its failures. */
import type { Db } from '../cache/database.js';
import { listFailures, listFeatureSets } from '../cache/features.js';
import { selectFeatureSet } from './feature-set.js';

export interface CacheListingOptions {
  /** Also list the files whose extraction failed, of this feature set (or the only one). */
  readonly failures?: { readonly featureSet: string | undefined };
}

/** The lines `pipeline cache` prints for the database at `dbPath`. */
export function describeCache(db: Db, dbPath: string, options: CacheListingOptions = {}): string[] {
  const sets = listFeatureSets(db);
  if (sets.length === 0) return [`${dbPath}: no feature sets yet (run \`pipeline extract\`)`];
  const lines = [`${dbPath}:`];
  for (const set of sets) {
    lines.push(
      `  ${set.id}  MobileNetV2 alpha ${set.alpha}  ${set.height}x${set.width} ${set.resize}  ${set.backend}  ` +
        `${set.features} vectors for ${set.images} images, ${set.failures} failures  created ${set.createdAt}`,
      `      views ${set.views.map((v) => `${v.view} (${v.vectors})`).join(', ') || 'none yet'}`,
      `      model ${set.modelSource}`,
    );
  }
  if (options.failures) {
    const set = selectFeatureSet(db, options.failures.featureSet);
    for (const failure of listFailures(db, set.id)) lines.push(`  ${failure.path}: ${failure.error}`);
  }
  return lines;
}
