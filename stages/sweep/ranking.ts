/**
 * Turning finished runs into a ranking: variants ordered by the mean of the validation
 * metric over their seeds. Test numbers are carried along for reading, never used to rank.
 */
import type { RunParams, StoredRun } from '../../cache/sweeps.js';

export interface Metric {
  readonly name: 'val_accuracy' | 'val_loss';
  readonly goal: 'maximize' | 'minimize';
}

export interface MeanStd {
  readonly mean: number;
  readonly std: number;
}

export interface VariantSummary {
  readonly variantKey: string;
  readonly params: RunParams;
  readonly seeds: number[];
  readonly metric: MeanStd;
  readonly valAccuracy: MeanStd;
  readonly valLoss: MeanStd;
  readonly testAccuracy: MeanStd;
  readonly macroF1: MeanStd;
  /** The variant's run with the best validation metric: the one exported and reported in detail. */
  readonly bestRun: StoredRun;
  readonly runs: StoredRun[];
}

const metricOf = (run: StoredRun, metric: Metric) => (metric.name === 'val_accuracy' ? run.valAccuracy : run.valLoss);

/** Sample standard deviation (n - 1), 0 for a single seed. */
export function meanStd(values: readonly number[]): MeanStd {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const variance = values.length > 1 ? values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1) : 0;
  return { mean, std: Math.sqrt(variance) };
}

export function rankVariants(runs: readonly StoredRun[], metric: Metric): VariantSummary[] {
  const byVariant = new Map<string, StoredRun[]>();
  for (const run of runs) byVariant.set(run.variantKey, [...(byVariant.get(run.variantKey) ?? []), run]);
  const better = (a: number, b: number) => (metric.goal === 'maximize' ? b - a : a - b);
  const summaries = [...byVariant.entries()].map(([variantKey, group]): VariantSummary => {
    const sorted = [...group].sort((a, b) => better(metricOf(a, metric), metricOf(b, metric)) || a.seed - b.seed);
    return {
      variantKey,
      params: group[0].params,
      seeds: group.map((run) => run.seed).sort((a, b) => a - b),
      metric: meanStd(group.map((run) => metricOf(run, metric))),
      valAccuracy: meanStd(group.map((run) => run.valAccuracy)),
      valLoss: meanStd(group.map((run) => run.valLoss)),
      testAccuracy: meanStd(group.map((run) => run.testAccuracy)),
      macroF1: meanStd(group.map((run) => run.macroF1)),
      bestRun: sorted[0],
      runs: sorted,
    };
  });
  // Ties on the metric go to the variant with more seeds, then to the canonical key: stable output.
  return summaries.sort(
    (a, b) => better(a.metric.mean, b.metric.mean) || b.seeds.length - a.seeds.length || (a.variantKey < b.variantKey ? -1 : 1),
  );
}

/** The parameters that differ between variants: the columns worth showing. */
export function varyingParameters(summaries: readonly VariantSummary[]): string[] {
  if (summaries.length === 0) return [];
  return Object.keys(summaries[0].params).filter((name) =>
    summaries.some((s) => JSON.stringify(s.params[name]) !== JSON.stringify(summaries[0].params[name])),
  );
}
