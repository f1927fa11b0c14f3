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
