/**
 * Label issues by confident learning (Northcutt, Jiang and Chuang, 2021) on out-of-sample
 * probabilities. Every image gets probabilities from a linear head that never saw it:
 * k folds, each predicted by a head trained with the sweep's own trainer on the other
 * folds but one, which serves as its validation set (so early stopping never looks at
 * the fold being predicted). Duplicate groups stay in one fold, or a copy would vouch for
 * its own label. Then, per class j, the threshold t_j is the mean probability of j over
 * the images labelled j; an image confidently belongs to the most probable class among
 * those at or above their threshold, and it is a label issue when that class is not its
 * given label. Issues are ranked by self-confidence (the probability of the given label).
 */
import { availableParallelism } from 'node:os';
import pLimit from 'p-limit';
import seedrandom from 'seedrandom';
import { type HeadParams, type SplitData, trainHeads } from '../sweep/trainer.js';
import type { AuditConfig } from './config.js';

export interface FoldInput {
  /** n x dim, row-major. */
  readonly vectors: Float32Array;
  readonly dim: number;
  readonly classes: number;
  readonly labels: Int32Array;
  /** Rows that must share a fold (duplicate group id per row; singletons have their own). */
  readonly groups: Int32Array;
}

/** Stratified folds of whole groups: each class's groups are dealt in a seeded order to the fold with the fewest of that class. */
export function assignFolds(labels: Int32Array, groups: Int32Array, folds: number, seed: number): Int32Array {
  const byGroup = new Map<number, number[]>();
  labels.forEach((_, i) => {
    const rows = byGroup.get(groups[i]);
    if (rows) rows.push(i);
    else byGroup.set(groups[i], [i]);
  });
  const classes = Math.max(-1, ...labels) + 1;
  const counts = Array.from({ length: classes }, () => new Int32Array(folds));
  const fold = new Int32Array(labels.length);
  const random = seedrandom(`audit-folds:${seed}`);
  const order = [...byGroup.values()].map((rows) => ({ rows, key: random() })).sort((a, b) => a.key - b.key);
  for (const { rows } of order) {
    const label = labels[rows[0]];
    let target = 0;
    for (let f = 1; f < folds; f++) if (counts[label][f] < counts[label][target]) target = f;
    for (const row of rows) {
      fold[row] = target;
      counts[labels[row]][target]++;
    }
  }
  return fold;
}

/** n x classes probabilities, each row from the head of the fold that held it out. */
export async function outOfSampleProbabilities(input: FoldInput, config: AuditConfig['label_issues']): Promise<Float32Array> {
  const { vectors, dim, classes, labels, groups } = input;
  const n = labels.length;
  const fold = assignFolds(labels, groups, config.folds, config.seed);
  const params: HeadParams = {
    dropout: config.dropout,
    learningRate: config.learning_rate,
    epochs: config.epochs,
    batchSize: 32,
    optimizer: 'adam',
    hiddenUnits: 0,
    weightDecay: 0,
    labelSmoothing: 0,
    classWeight: 'none',
  };
  const rowsWhere = (keep: (row: number) => boolean) => Array.from({ length: n }, (_, i) => i).filter(keep);
  const gather = (rows: number[]): SplitData => {
    const x = new Float32Array(rows.length * dim);
    rows.forEach((row, r) => x.set(vectors.subarray(row * dim, (row + 1) * dim), r * dim));
    return { x, y: Int32Array.from(rows, (row) => labels[row]) };
  };
  const probabilities = new Float32Array(n * classes);
  // trainHeads starts one worker per run: one fold per core at a time.
  const limit = pLimit(availableParallelism());
  await Promise.all(
    Array.from({ length: config.folds }, (_, f) =>
      limit(async () => {
        const validation = (f + 1) % config.folds;
        const held = rowsWhere((i) => fold[i] === f);
        if (held.length === 0) return;
        const [result] = await trainHeads(
          {
            dim,
            classes,
            train: gather(rowsWhere((i) => fold[i] !== f && fold[i] !== validation)),
            val: gather(rowsWhere((i) => fold[i] === validation)),
            test: gather(held),
          },
          [{ key: `fold-${f}`, params, seed: config.seed }],
          { monitor: 'val_loss', patience: 5 },
        );
        held.forEach((row, r) => probabilities.set(result.test.probabilities.subarray(r * classes, (r + 1) * classes), row * classes));
      }),
    ),
  );
  return probabilities;
}

export interface ConfidentLearning {
  /** Per class: mean probability of that class over the images labelled with it. */
  readonly thresholds: number[];
  /** rows = given label, columns = confident label; images with no class at its threshold are not counted. */
  readonly confidentJoint: number[][];
  /** Per image: the confident label, or -1 when no class reaches its threshold. */
  readonly confident: Int32Array;
  /** Per image: the probability of its given label. */
  readonly selfConfidence: Float32Array;
}

export function confidentLearning(probabilities: Float32Array, labels: Int32Array, classes: number): ConfidentLearning {
  const n = labels.length;
  const sums = new Float64Array(classes);
  const counts = new Float64Array(classes);
  for (let i = 0; i < n; i++) {
    sums[labels[i]] += probabilities[i * classes + labels[i]];
    counts[labels[i]]++;
  }
  const thresholds = Array.from(sums, (sum, j) => (counts[j] ? sum / counts[j] : Infinity));
  const confidentJoint = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  const confident = new Int32Array(n).fill(-1);
  const selfConfidence = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    selfConfidence[i] = probabilities[i * classes + labels[i]];
    let best = -1;
    for (let j = 0; j < classes; j++) {
      const p = probabilities[i * classes + j];
      if (p >= thresholds[j] && (best < 0 || p > probabilities[i * classes + best])) best = j;
    }
    confident[i] = best;
    if (best >= 0) confidentJoint[labels[i]][best]++;
  }
  return { thresholds, confidentJoint, confident, selfConfidence };
}

/** Rows whose confident label differs from the given one, least self-confident first. */
export function labelIssueRows(result: ConfidentLearning, labels: Int32Array): number[] {
  const rows: number[] = [];
  result.confident.forEach((c, i) => {
    if (c >= 0 && c !== labels[i]) rows.push(i);
  });
  return rows.sort((a, b) => result.selfConfidence[a] - result.selfConfidence[b] || a - b);
}
