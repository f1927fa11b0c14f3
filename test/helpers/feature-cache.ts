/**
 * A feature cache without a backbone: seeded Gaussian class clusters written through the
 * cache's own functions, for sweep tests that must run in seconds.
 */
import { PREPROCESSING } from '../../backbone/preprocessing.js';
import { type Db, openDatabase } from '../../cache/database.js';
import { type FeatureSet, ensureFeatureSet, replaceItems, saveBatch } from '../../cache/features.js';
import type { Split } from '../../data/dataset.js';
import { rng } from './random-model.js';

export interface FeatureCacheOptions {
  readonly classes?: readonly string[];
  readonly perClass?: number;
  readonly dim?: number;
  /** Record official splits (every 5th val, every 5th+1 test, else train) instead of none. */
  readonly officialSplits?: boolean;
  /** Leave this many images without a vector, as an interrupted extract would. */
  readonly missing?: number;
  readonly seed?: number;
}

export interface FeatureCache {
  readonly db: Db;
  readonly featureSet: FeatureSet;
}

/** Box-Muller normal from a uniform generator. */
const normal = (random: () => number) => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());

export function makeFeatureCache(path: string, options: FeatureCacheOptions = {}): FeatureCache {
  const { classes = ['a', 'b', 'c'], perClass = 40, dim = 64, officialSplits = false, missing = 0, seed = 1 } = options;
  const random = rng(seed);
  const db = openDatabase(path);
  const featureSet = ensureFeatureSet(db, {
    id: `synthetic-${seed}`,
    modelSource: 'synthetic',
    weightsSha256: 'synthetic',
    architecture: 'mobilenet_v2',
    alpha: 1,
    height: 32,
    width: 32,
    resize: 'fill',
    preprocessing: PREPROCESSING.id,
    backend: 'synthetic',
    dim,
  });
  const centres = classes.map(() => Float32Array.from({ length: dim }, () => normal(random)));
  const items: { path: string; label: string; split: Split | null; sha256: string }[] = [];
  const features: { sha256: string; vector: Float32Array }[] = [];
  classes.forEach((label, c) => {
    for (let i = 0; i < perClass; i++) {
      const sha256 = `${label}-${i}-`.padEnd(64, '0');
      const split: Split | null = officialSplits ? (i % 5 === 0 ? 'val' : i % 5 === 1 ? 'test' : 'train') : null;
      items.push({ path: `${label}/${label}${i}.jpg`, label, split, sha256 });
      features.push({ sha256, vector: Float32Array.from(centres[c], (v) => v + 1.5 * normal(random)) });
    }
  });
  replaceItems(db, featureSet.id, items);
  saveBatch(db, featureSet.id, { features: features.slice(missing), failures: [] });
  return { db, featureSet };
}
