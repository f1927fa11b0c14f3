/** The audit for a terminal: counts first, then the top findings with their paths. */
import type { AuditResult } from '../audit.js';
import { percent } from '../report/tables.js';

export function auditText(result: AuditResult, top: number): string {
  const s = result.summary;
  const lines = [
    `audit ${result.audit_id} of feature set ${result.feature_set}: ${s.images} images, split from ${result.split_source}`,
    `  duplicate groups  ${s.duplicate_groups} (${s.exact_groups} exact, ${s.near_groups} near), ${s.images_in_groups} images in them`,
    `  leaks             ${s.cross_split_groups} groups span splits, ${s.cross_class_groups} span classes; ` +
      `${s.test_images_with_copy_in_train_val} test images have a copy in train/val`,
    `  label issues      ${s.label_issues} suspected (out-of-sample accuracy of the k-fold heads ${percent(s.oos_accuracy)})`,
    `  outliers          ${s.outliers} listed (least typical per class)`,
  ];
  const acc = result.test_accuracy;
  if (acc) {
    lines.push(
      `  test accuracy     sweep ${acc.sweep} (${acc.run_key}): ${percent(acc.test_accuracy)} on ${acc.test_images} test images, ` +
        (acc.test_accuracy_without_copies === null
          ? 'no test image without a copy in train/val'
          : `${percent(acc.test_accuracy_without_copies)} without the ${acc.left_out} that have a copy in train/val`),
    );
  }
  const leaking = result.leaks.slice(0, top);
  if (leaking.length > 0) {
    lines.push('', `leaking groups (first ${leaking.length} of ${result.leaks.length}):`);
    for (const leak of leaking) {
      const group = result.duplicate_groups[leak.group];
      const members = group.paths.map((path, i) => `${path} [${group.split[i] ?? '-'}]`).join('  ');
      lines.push(`  ${group.kind.padEnd(5)}  ${members}`);
    }
  }
  const issues = result.label_issues.slice(0, top);
  if (issues.length > 0) {
    lines.push('', `suspected label errors (first ${issues.length} of ${result.label_issues.length}; score = out-of-sample probability of the given label):`);
    for (const issue of issues) {
      lines.push(`  ${issue.score.toFixed(3)}  ${issue.path}  ${issue.given_label} -> ${issue.suggested_label}`);
    }
  }
  const outliers = [...result.outliers].sort((a, b) => a.score - b.score).slice(0, top);
  if (outliers.length > 0) {
    lines.push('', `least typical images (score = mean cosine to the nearest of the same class):`);
    for (const outlier of outliers) lines.push(`  ${outlier.score.toFixed(3)}  ${outlier.path}`);
  }
  lines.push('', `${result.seconds.total.toFixed(1)} s; stored as audit ${result.audit_id}; all findings: pipeline audit --json`);
  return lines.join('\n');
}
