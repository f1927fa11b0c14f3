/**
 * The shape of an audit's findings: what `pipeline audit --json` prints and the cache
 * stores (without audit_id, the row's id), read back by the report. Field names are the
 * JSON API (README): change them only with the README.
 */
import type { DuplicateGroup, Leak } from './duplicates.js';

/** A sweep's selected run on test, with and without the test images that have a copy in train or val. */
export interface LeakFreeAccuracy {
  readonly sweep: number;
  readonly run_key: string;
  readonly test_images: number;
  readonly test_accuracy: number;
  /** Test images left out: those with a copy in train or val. */
  readonly left_out: number;
  readonly test_accuracy_without_copies: number | null;
}

export interface LabelIssue {
  readonly path: string;
  readonly given_label: string;
  readonly suggested_label: string;
  /** Out-of-sample probability of the given label: lower is more suspect. */
  readonly score: number;
}

export interface Outlier {
  readonly path: string;
  readonly label: string;
  /** Mean cosine to the nearest images of the same class: lower is less typical. */
  readonly score: number;
}

export interface AuditResult {
  readonly audit_id: number;
  readonly feature_set: string;
  readonly split_source: string;
  readonly labels: string[];
  readonly duplicate_groups: DuplicateGroup[];
  readonly leaks: Leak[];
  readonly label_issues: LabelIssue[];
  readonly outliers: Outlier[];
  /** null when the feature set has no finished sweep. */
  readonly test_accuracy: LeakFreeAccuracy | null;
  /** rows = given label, columns = confident label (labels order). */
  readonly confident_joint: number[][];
  readonly summary: {
    images: number;
    duplicate_groups: number;
    exact_groups: number;
    near_groups: number;
    images_in_groups: number;
    cross_split_groups: number;
    cross_class_groups: number;
    test_images_with_copy_in_train_val: number;
    label_issues: number;
    outliers: number;
    phash_computed: number;
    phash_unavailable: number;
    oos_accuracy: number;
  };
  /** Wall time of each part; label_issues includes the map, which is laid out while the folds train. */
  readonly seconds: { hashes: number; neighbours: number; label_issues: number; map: number; total: number };
}
