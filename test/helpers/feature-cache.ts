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

export interface ViewsCacheOptions {
  /**
   * help: every view of an image is its class centre plus the image's own offset plus
   * independent view noise, so more views mean more rows and less noise after averaging.
   * hurt: two classes that differ only by orientation: vflip and rot180 of an `up` image
   * look like a `down` image (and the reverse), while hflip keeps the class.
   */
  readonly kind: 'help' | 'hurt';
  /** Input sizes, one feature set each, same family (default one: 32x32). */
  readonly sizes?: readonly { height: number; width: number }[];
  readonly views?: readonly string[];
  readonly perClass?: number;
  readonly dim?: number;
  readonly seed?: number;
}

export interface ViewsCache {
  readonly db: Db;
  /** One feature set per size, in the order given. */
  readonly featureSets: FeatureSet[];
}

/**
 * A cache of generated features with several views and sizes, written through the cache's
 * own functions, with official splits (every 5th image val, every 5th+1 test). Sizes are
 * independent draws of the same construction, so each is informative on its own.
 */
export function makeViewsCache(path: string, options: ViewsCacheOptions): ViewsCache {
  const { kind, sizes = [{ height: 32, width: 32 }], views = ['original', 'hflip', 'vflip', 'rot180'], perClass = 60, dim = 32, seed = 3 } = options;
  const random = rng(seed);
  const db = openDatabase(path);
  const classes = kind === 'help' ? ['a', 'b', 'c'] : ['down', 'up'];
  const items = classes.flatMap((label) =>
    Array.from({ length: perClass }, (_, i) => ({
      path: `${label}/${label}${i}.jpg`,
      label,
      split: (i % 5 === 0 ? 'val' : i % 5 === 1 ? 'test' : 'train') as Split,
      sha256: `${label}-${i}-`.padEnd(64, '0'),
    })),
  );
  const featureSets = sizes.map(({ height, width }) => {
    const featureSet = ensureFeatureSet(db, {
      id: `views-${kind}-${seed}-${height}x${width}`,
      modelSource: 'synthetic',
      weightsSha256: 'synthetic',
      architecture: 'mobilenet_v2',
      alpha: 1,
      height,
      width,
      resize: 'fill',
      preprocessing: PREPROCESSING.id,
      backend: 'synthetic',
      dim,
    });
    const centres = classes.map(() => Float32Array.from({ length: dim }, () => normal(random)));
    const features: { sha256: string; view: string; vector: Float32Array }[] = [];
    for (const item of items) {
      const c = classes.indexOf(item.label);
      const own = Float32Array.from({ length: dim }, () => normal(random));
      for (const view of views) {
        const flipped = kind === 'hurt' && (view === 'vflip' || view === 'rot180');
        const centre = centres[flipped ? 1 - c : c];
        const noise = kind === 'help' ? 2.2 : 0.8;
        const vector = Float32Array.from(centre, (v, d) => v + 0.6 * own[d] + noise * normal(random));
        features.push({ sha256: item.sha256, view, vector });
      }
    }
    replaceItems(db, featureSet.id, items);
    saveBatch(db, featureSet.id, { features, failures: [] });
    return featureSet;
  });
  return { db, featureSets };
}
