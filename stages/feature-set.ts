/** Picking the feature set a command works on: the one given, or the only one there is. */
import type { FeatureSet } from '../cache/features.js';
import { type StoreLike, storeOf } from '../cache/store.js';
import { UserError } from '../core/errors.js';

export async function selectFeatureSet(db: StoreLike, id: string | undefined): Promise<FeatureSet> {
  const store = storeOf(db);
  if (id) {
    const set = await store.getFeatureSet(id);
    if (!set) throw new UserError(`--feature-set ${id}: no such feature set (see \`pipeline cache\`)`);
    return set;
  }
  const sets = await store.listFeatureSets();
  if (sets.length === 0) throw new UserError('the cache holds no features yet: run `pipeline extract` first');
  if (sets.length > 1) {
    throw new UserError(`the cache holds ${sets.length} feature sets (${sets.map((s) => s.id).join(', ')}): choose one with --feature-set ID`);
  }
  return sets[0];
}

/** `HxW` of a feature set, as sweep `sizes` name it. */
export const sizeName = (set: Pick<FeatureSet, 'height' | 'width'>) => `${set.height}x${set.width}`;

/**
 * The feature sets that differ from `set` only in input size (same weights, architecture,
 * resize, preprocessing and engine), by `HxW`, `set` itself included: the sizes a sweep
 * may concatenate with it.
 */
export async function sizeSiblings(db: StoreLike, set: FeatureSet): Promise<Map<string, FeatureSet>> {
  const store = storeOf(db);
  const family = familyKey(set);
  const siblings = (await store.listFeatureSets()).filter((s) => familyKey(s) === family);
  return new Map(await Promise.all(siblings.map(async (s) => [sizeName(s), (await store.getFeatureSet(s.id))!] as const)));
}

const familyKey = (s: FeatureSet) => JSON.stringify([s.weightsSha256, s.architecture, s.alpha, s.resize, s.preprocessing, s.backend]);

/**
 * The feature set a sweep is anchored to (its split, its listing, its id in the sweep
 * record): the one given; else, when the cache holds one family of sizes (see
 * sizeSiblings), the one of `preferredSize` (the first size the sweep concatenates), or
 * the only one.
 */
export async function selectSweepFeatureSet(db: StoreLike, id: string | undefined, preferredSize: string | undefined): Promise<FeatureSet> {
  if (id) return selectFeatureSet(db, id);
  const store = storeOf(db);
  const sets = await store.listFeatureSets();
  const families = new Set(sets.map(familyKey));
  const preferred = preferredSize === undefined ? undefined : sets.find((s) => sizeName(s) === preferredSize);
  if (families.size === 1 && preferred) return (await store.getFeatureSet(preferred.id))!;
  if (families.size === 1 && preferredSize !== undefined) throw missingSize(preferredSize, sets.map(sizeName), []);
  return selectFeatureSet(db, undefined);
}

/** The error for a sweep size with no feature set in the cache. */
export function missingSize(size: string, cached: readonly string[], views: readonly string[]): UserError {
  const withViews = views.length > 1 || (views.length === 1 && views[0] !== 'original') ? ` --views ${views.join(',')}` : '';
  return new UserError(
    `sweep.parameters.sizes: the cache has no features at size ${size} (cached: ${cached.join(', ') || 'none'}): run \`pipeline extract --size ${size}${withViews}\``,
  );
}
