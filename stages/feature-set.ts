/** Picking the feature set a command works on: the one given, or the only one there is. */
import type { Db } from '../cache/database.js';
import { type FeatureSet, getFeatureSet, listFeatureSets } from '../cache/features.js';
import { UserError } from '../core/errors.js';

export function selectFeatureSet(db: Db, id: string | undefined): FeatureSet {
  if (id) {
    const set = getFeatureSet(db, id);
    if (!set) throw new UserError(`--feature-set ${id}: no such feature set (see \`pipeline cache\`)`);
    return set;
  }
  const sets = listFeatureSets(db);
  if (sets.length === 0) throw new UserError('the cache holds no features yet: run `pipeline extract` first');
  if (sets.length > 1) {
    throw new UserError(`the cache holds ${sets.length} feature sets (${sets.map((s) => s.id).join(', ')}): choose one with --feature-set ID`);
  }
  return sets[0];
}
