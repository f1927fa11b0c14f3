/** Terminal tables shared by `pipeline sweep` and `pipeline report`. */
import Table from 'cli-table3';
import type { RunParams } from '../../cache/sweeps.js';
import type { InputFacts } from '../report.js';
import type { MeanStd, Metric } from '../sweep/ranking.js';

export const percent = (value: number) => `${(value * 100).toFixed(2)}%`;
const meanStdText = (m: MeanStd, asPercent: boolean) =>
  asPercent ? `${(m.mean * 100).toFixed(2)} ± ${(m.std * 100).toFixed(2)}%` : `${m.mean.toFixed(4)} ± ${m.std.toFixed(4)}`;

const plain = { chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' }, style: { head: [], border: [] } };

/** One line of a ranking: a variant's parameters and its scores over seeds. */
export interface RankingRow {
  readonly params: RunParams;
  readonly metric: MeanStd;
  readonly testAccuracyMean: number;
  readonly seeds: number;
}

/** Variants ranked by the validation metric (mean ± std over seeds), with test accuracy for reading. */
export function rankingTable(rows: readonly RankingRow[], varying: readonly string[], metric: Metric, top: number): string {
  const table = new Table({
    ...plain,
    head: ['#', ...varying, `${metric.name} (mean ± std)`, 'test acc (mean)', 'seeds'],
  });
  rows.slice(0, top).forEach((row, i) => {
    table.push([
      String(i + 1),
      ...varying.map((name) => String(row.params[name])),
      meanStdText(row.metric, metric.name === 'val_accuracy'),
      percent(row.testAccuracyMean),
      String(row.seeds),
    ]);
  });
  return table.toString();
}

/** Rows = true class, columns = predicted class. */
export function confusionTable(labels: readonly string[], confusion: readonly number[][]): string {
  const table = new Table({ ...plain, head: ['true \\ predicted', ...labels] });
  confusion.forEach((row, i) => table.push([labels[i], ...row.map(String)]));
  return table.toString();
}

export function perClassTable(perClass: readonly { label: string; precision: number; recall: number; f1: number; support: number }[]): string {
  const table = new Table({ ...plain, head: ['class', 'precision', 'recall', 'F1', 'support'] });
  for (const c of perClass) table.push([c.label, c.precision.toFixed(3), c.recall.toFixed(3), c.f1.toFixed(3), String(c.support)]);
  return table.toString();
}

/** "sizes 448x597 + 320x427 (concatenated), views original, hflip (averaged), standardized". */
export function inputsText(inputs: InputFacts): string {
  const sizes = inputs.sizes.length > 1 ? `sizes ${inputs.sizes.join(' + ')} (concatenated)` : `size ${inputs.sizes[0]}`;
  const views = inputs.views.length > 1 ? `views ${inputs.views.join(', ')} (trained on, averaged at val/test)` : `view ${inputs.views[0]}`;
  return `${sizes}, ${views}, ${inputs.standardize ? 'z-scored with train statistics' : 'not standardized'}`;
}
