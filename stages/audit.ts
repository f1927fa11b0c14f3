/**
 * `pipeline audit`: what is wrong with the dataset, found from the cached embeddings.
 * Duplicate groups (exact and near), copies leaking across splits or classes, suspected
 * label errors (confident learning on k-fold out-of-sample probabilities), the least
 * typical images of each class, the test accuracy of the latest sweep without test images
 * that have a copy in train/val, and a 2-D map. The result is stored in the cache; its
 * field names are the JSON API (README): change them only with the README.
 */
import type { FeatureSet } from '../cache/features.js';
import { type Store, type StoreLike, storeOf } from '../cache/store.js';
import { UserError } from '../core/errors.js';
import { type Log, type StartProgress, noProgress, quietLog } from '../core/log.js';
import { byCodeUnit } from '../data/dataset.js';
import type { AuditConfig } from './audit/config.js';
import { type AuditItem, type DuplicateGroup, candidateCosine, duplicateGroups, findLeaks, pairDistances, testCopies } from './audit/duplicates.js';
import { perceptualHashes } from './audit/hashes.js';
import { confidentLearning, labelIssueRows, outOfSampleProbabilities } from './audit/labels.js';
import { umapLayout } from './audit/map.js';
import { findNeighbours } from './audit/neighbours.js';
import { leakFreeAccuracy } from './report.js';
import { argmaxRows } from '../core/arrays.js';
import type { AuditResult, LeakFreeAccuracy, Outlier } from './audit/result.js';

export type { AuditResult, LabelIssue, LeakFreeAccuracy, Outlier } from './audit/result.js';

export interface AuditOptions {
  readonly db: StoreLike;
  readonly featureSet: FeatureSet;
  readonly config: AuditConfig;
  readonly log?: Log;
  readonly startProgress?: StartProgress;
}

export async function runAudit(options: AuditOptions): Promise<AuditResult> {
  const { featureSet, config } = options;
  const db = storeOf(options.db);
  const log = options.log ?? quietLog;
  const started = performance.now();
  const clock = () => {
    let last = performance.now();
    return () => {
      const now = performance.now();
      const seconds = (now - last) / 1000;
      last = now;
      return seconds;
    };
  };
  const lap = clock();

  const listed = await db.listItems(featureSet.id);
  if (listed.length === 0) throw new UserError(`feature set ${featureSet.id} has no images recorded: run \`pipeline extract\` first`);
  const vectors = await db.loadVectors(featureSet.id, listed.map((item) => item.sha256));
  const stored = await db.loadSplit(featureSet.id);
  const storedSplit = new Map(stored.map((row) => [row.path, row.split as string]));
  const items: AuditItem[] = listed
    .filter((item) => vectors.has(item.sha256))
    .map((item) => ({ ...item, split: stored.length > 0 ? (storedSplit.get(item.path) ?? null) : item.split }));
  if (items.length < listed.length) log(`${listed.length - items.length} images have no features (failed or not extracted) and are left out`);
  if (items.length < 2) throw new UserError(`feature set ${featureSet.id} has ${items.length} usable images: an audit needs at least 2`);
  const splitSource = stored[0]?.source ?? (items.some((item) => item.split) ? 'official split lists' : 'none');

  const labels = [...new Set(items.map((item) => item.label))].sort(byCodeUnit);
  const classIndex = new Map(labels.map((label, i) => [label, i]));
  const y = Int32Array.from(items, (item) => classIndex.get(item.label)!);
  const contentIds = new Map<string, number>();
  const contents = Int32Array.from(items, (item) => {
    if (!contentIds.has(item.sha256)) contentIds.set(item.sha256, contentIds.size);
    return contentIds.get(item.sha256)!;
  });
  const dim = featureSet.dim;
  const x = new Float32Array(items.length * dim);
  items.forEach((item, i) => x.set(vectors.get(item.sha256)!, i * dim));

  const root = (await db.latestExtractRun(featureSet.id))?.datasetRoot ?? null;
  const hashed = await perceptualHashes(db, featureSet, items, root, log, options.startProgress ?? noProgress);
  const hashSeconds = lap();

  const neighbours = await findNeighbours({
    vectors: x,
    dim,
    labels: y,
    contents,
    k: Math.max(1, config.map.neighbors - 1),
    classK: config.outliers.neighbors,
    pairCosine: candidateCosine(config.duplicates),
  });
  const distances = pairDistances(neighbours.pairs, items, hashed.hashes);
  const groups = duplicateGroups(items, neighbours.pairs, distances, config.duplicates);
  const leaks = findLeaks(groups);
  const neighbourSeconds = lap();

  const rowOf = new Map(items.map((item, i) => [item.path, i]));
  const groupOf = Int32Array.from(items, (_, i) => groups.length + i);
  groups.forEach((group, g) => group.paths.forEach((path) => (groupOf[rowOf.get(path)!] = g)));
  // The folds train in worker threads; the map is laid out here meanwhile.
  const training = outOfSampleProbabilities({ vectors: x, dim, classes: labels.length, labels: y, groups: groupOf }, config.label_issues);
  const mapStarted = performance.now();
  const layout = umapLayout(neighbours.index, neighbours.cosine, items.length, config.map);
  const mapSeconds = (performance.now() - mapStarted) / 1000;
  const probabilities = await training;
  const cl = confidentLearning(probabilities, y, labels.length);
  const predicted = argmaxRows(probabilities, labels.length);
  const labelIssues = labelIssueRows(cl, y).map((i) => ({
    path: items[i].path,
    given_label: items[i].label,
    suggested_label: labels[cl.confident[i]],
    score: round(cl.selfConfidence[i]),
  }));
  const outliers = leastTypical(items, y, labels.length, neighbours.classCosine, config.outliers);
  const labelSeconds = lap();

  const testAccuracy = await latestLeakFreeAccuracy(db, featureSet, groups);
  const summary: AuditResult['summary'] = {
    images: items.length,
    duplicate_groups: groups.length,
    exact_groups: groups.filter((g) => g.kind === 'exact').length,
    near_groups: groups.filter((g) => g.kind === 'near').length,
    images_in_groups: groups.reduce((sum, g) => sum + g.paths.length, 0),
    cross_split_groups: leaks.filter((leak) => leak.splits.length > 1).length,
    cross_class_groups: leaks.filter((leak) => leak.labels.length > 1).length,
    test_images_with_copy_in_train_val: testCopies(groups).size,
    label_issues: labelIssues.length,
    outliers: outliers.length,
    phash_computed: hashed.computed,
    phash_unavailable: hashed.unreadable,
    oos_accuracy: round(predicted.reduce((sum, p, i) => sum + (p === y[i] ? 1 : 0), 0) / items.length),
  };
  const seconds = {
    hashes: round(hashSeconds, 3),
    neighbours: round(neighbourSeconds, 3),
    label_issues: round(labelSeconds, 3),
    map: round(mapSeconds, 3),
    total: round((performance.now() - started) / 1000, 3),
  };
  const findings = {
    feature_set: featureSet.id,
    split_source: splitSource,
    labels,
    duplicate_groups: groups,
    leaks,
    label_issues: labelIssues,
    outliers,
    test_accuracy: testAccuracy,
    confident_joint: cl.confidentJoint,
    summary,
    seconds,
  };
  const auditId = await db.saveAudit({
    featureSet: featureSet.id,
    config,
    result: findings,
    seconds: seconds.total,
    map: items.map((item, i) => ({ path: item.path, x: layout[i * 2], y: layout[i * 2 + 1] })),
  });
  return { audit_id: auditId, ...findings };
}

/** The least typical images of each class: lowest mean cosine to their nearest same-class images. */
function leastTypical(
  items: readonly AuditItem[],
  y: Int32Array,
  classes: number,
  classCosine: Float32Array,
  config: AuditConfig['outliers'],
): Outlier[] {
  const k = config.neighbors;
  const scored = items.map((item, i) => {
    let sum = 0;
    let count = 0;
    for (let r = 0; r < k; r++) {
      const cosine = classCosine[i * k + r];
      if (cosine === -Infinity) break;
      sum += cosine;
      count++;
    }
    return { row: i, score: count ? sum / count : 0 };
  });
  const outliers: Outlier[] = [];
  for (let c = 0; c < classes; c++) {
    scored
      .filter(({ row }) => y[row] === c)
      .sort((a, b) => a.score - b.score || a.row - b.row)
      .slice(0, config.per_class)
      .forEach(({ row, score }) => outliers.push({ path: items[row].path, label: items[row].label, score: round(score) }));
  }
  return outliers;
}

/**
 * The latest finished sweep's winner on test, with and without the test images that have
 * a copy in train or val.
 */
async function latestLeakFreeAccuracy(db: Store, featureSet: FeatureSet, groups: readonly DuplicateGroup[]): Promise<LeakFreeAccuracy | null> {
  // Sweeps from before members were stored cannot be lined up with images: skipped.
  const sweep = (await db.listSweeps()).filter((s) => s.featureSet === featureSet.id && s.status === 'done' && s.dataHash !== null).at(-1);
  return sweep ? leakFreeAccuracy(db, sweep, testCopies(groups)) : null;
}

const round = (value: number, digits = 4) => Number(value.toFixed(digits));
