/** `pipeline report` in the terminal: what won, how well, and what it was built on. */
import type { ReportFacts } from '../report.js';
import { confusionTable, inputsText, perClassTable, percent, rankingTable } from './tables.js';

export function reportText(facts: ReportFacts, top = 10): string {
  const { sweep, extraction, best } = facts;
  const rows = facts.variants.map((v) => ({
    params: v.params,
    metric: { mean: v.metric_mean, std: v.metric_std },
    testAccuracyMean: v.test_accuracy_mean,
    seeds: v.seeds.length,
  }));
  const lines = [
    `sweep ${sweep.id} (${sweep.status}): ${sweep.finished_runs}/${sweep.planned_runs} runs, ${facts.variants.length} variants x ${sweep.seeds.length} seeds, ` +
      `${sweep.wall_seconds?.toFixed(1) ?? '?'} s of training on ${sweep.trainer}`,
    `features: ${extraction.feature_set}, MobileNetV2 alpha ${extraction.alpha} at ${extraction.input_size} (${extraction.resize}), ` +
      `${extraction.backend}, ${extraction.images} images, ${extraction.failures} failures` +
      (extraction.images_per_second ? `, extracted at ${extraction.images_per_second.toFixed(1)} images/s` : ''),
    `  model ${extraction.model}`,
    `split: ${sweep.split_sizes.train} train / ${sweep.split_sizes.val} val / ${sweep.split_sizes.test} test (${sweep.split})`,
    '',
    `variants ranked by mean ${sweep.metric.name} (top ${Math.min(top, facts.variants.length)} of ${facts.variants.length}):`,
    rankingTable(rows, facts.varying_params, sweep.metric, top),
    '',
    `winner: ${Object.entries(best.params).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    `  inputs: ${inputsText(best.inputs)}`,
    `  test accuracy ${percent(best.test_accuracy_mean)} ± ${percent(best.test_accuracy_std)} over seeds` +
      (best.inputs.views.length > 1 && best.test_accuracy_single_view_mean !== null
        ? ` averaged over its ${best.inputs.views.length} views, ${percent(best.test_accuracy_single_view_mean)} on ${best.inputs.views[0]} alone`
        : '') +
      '; ' +
      `reported run (seed ${best.seed}, epoch ${best.best_epoch}): val ${percent(best.val_accuracy)}, ` +
      `test ${percent(best.test_accuracy)}, macro-F1 ${best.macro_f1.toFixed(3)}`,
    '',
    perClassTable(best.per_class),
    '',
    confusionTable(facts.labels, best.confusion),
    '',
    `${best.misclassified.length} test images misclassified (pipeline report --html FILE shows them)`,
    ...auditLines(facts),
  ];
  return lines.join('\n');
}

/** One line on the feature set's newest audit, when there is one. */
function auditLines(facts: ReportFacts): string[] {
  const audit = facts.audit;
  if (!audit) return [];
  const { summary, test_accuracy: accuracy } = audit;
  const withoutCopies =
    accuracy.left_out === 0 || accuracy.test_accuracy_without_copies === null
      ? 'no test image has a copy in train/val'
      : `test accuracy ${percent(accuracy.test_accuracy_without_copies)} without the ${accuracy.left_out} test images that have a copy in train/val`;
  return [
    `audit ${audit.audit_id}: ${summary.duplicate_groups} duplicate groups (${summary.cross_split_groups} across splits, ${summary.cross_class_groups} across classes), ` +
      `${summary.label_issues} suspected label errors; ${withoutCopies} (pipeline audit lists them)`,
  ];
}
