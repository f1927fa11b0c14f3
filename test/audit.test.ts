/**
 * `pipeline audit` on real photos with known problems (test/helpers/audit-fixture.ts):
 * TrashNet images 81-140 of each class by name (the thresholds were chosen on images
 * 1-80, so these are held out), with edited copies planted in other splits and classes
 * and photos moved to a wrong class. Features come from the real MobileNetV2 at 224x224.
 * Logs precision and recall of duplicate detection and the recall of the moved photos.
 */
import test from 'ava';
import { join } from 'node:path';
import { latestAudit, type MapPoint } from '../cache/audit.js';
import { openDatabase } from '../cache/database.js';
import { listFeatureSets } from '../cache/features.js';
import { type AuditResult, runAudit } from '../stages/audit.js';
import { DEFAULT_AUDIT_CONFIG } from '../stages/audit/config.js';
import { runExtract } from '../stages/extract.js';
import { type PlantedDataset, plantDataset } from './helpers/audit-fixture.js';
import { runPipeline } from './helpers/cli.js';
import { SHARED_MODEL_100, TRASHNET_DIR, fileTempDir, serialTestWithShared } from './helpers/shared.js';

/**
 * Pairs among these originals that TrashNet itself holds as near duplicates (the same
 * object photographed twice from the same spot), checked by eye: a detection of one is right.
 */
const NATURAL_DUPLICATES: [string, string][] = [];

const temp = fileTempDir('pipeline-audit-');
let planted: PlantedDataset;
let db: string;

async function prepare(): Promise<void> {
  if (planted) return;
  planted = await plantDataset(join(temp.dir, 'data'), { trashnet: TRASHNET_DIR, skip: 80, perClass: 60, copiesPerClass: 6, movedPerClass: 3 });
  db = join(temp.dir, 'cache.sqlite');
  await runExtract({
    dataset: { root: planted.root, url: null, sha256: null, splits: null },
    model: { weights: SHARED_MODEL_100, size: { height: 224, width: 224 }, resize: 'fill' },
    db,
    backend: 'onnx',
    batch: 8,
    concurrency: 2,
  });
}

/** Same-cluster test for paths: planted copies with their original, and the natural duplicates. */
function truth(dataset: PlantedDataset): (a: string, b: string) => boolean {
  const parent = new Map<string, string>();
  const find = (a: string): string => {
    while (parent.has(a) && parent.get(a) !== a) a = parent.get(a)!;
    return a;
  };
  const union = (a: string, b: string) => {
    const [ra, rb] = [find(a), find(b)];
    if (ra !== rb) parent.set(ra, rb);
  };
  for (const copy of dataset.copies) union(copy.original, copy.copy);
  for (const [a, b] of NATURAL_DUPLICATES) union(a, b);
  return (a, b) => find(a) === find(b);
}

serialTestWithShared('audit finds planted copies, their leaks and moved photos; the result is stored with its map', async (t) => {
  await prepare();
  const cache = openDatabase(db);
  t.teardown(() => cache.close());
  const [featureSet] = listFeatureSets(cache);
  const result = await runAudit({ db: cache, featureSet, config: DEFAULT_AUDIT_CONFIG });

  const same = truth(planted);
  const detected = result.duplicate_groups.flatMap((group) =>
    group.paths.flatMap((a, i) => group.paths.slice(i + 1).map((b) => [a, b] as const)),
  );
  const wrong = detected.filter(([a, b]) => !same(a, b));
  const precision = (detected.length - wrong.length) / detected.length;
  const grouped = (a: string, b: string) => result.duplicate_groups.some((g) => g.paths.includes(a) && g.paths.includes(b));
  const found = planted.copies.filter((c) => grouped(c.original, c.copy));
  const recall = found.length / planted.copies.length;
  const missed = planted.copies.filter((c) => !grouped(c.original, c.copy));
  t.log(`${result.summary.images} images, ${planted.copies.length} planted copies, ${result.duplicate_groups.length} groups`);
  t.log(`duplicate pairs: precision ${precision.toFixed(3)} (${detected.length - wrong.length}/${detected.length}), recall of planted copies ${recall.toFixed(3)} (${found.length}/${planted.copies.length})`);
  for (const [a, b] of wrong) t.log(`  not a known duplicate: ${a} ${b}`);
  for (const c of missed) t.log(`  missed: ${c.edit} ${c.original} ${c.copy}`);
  t.true(precision >= 0.9, `precision ${precision}`);
  t.true(recall >= 0.9, `recall ${recall}`);

  // every planted copy sits in another split (and half in another class): each found one is a leak
  for (const copy of found) {
    const index = result.duplicate_groups.findIndex((g) => g.paths.includes(copy.copy));
    const leak = result.leaks.find((l) => l.group === index);
    t.truthy(leak, `${copy.copy} is a leak`);
    t.true(leak!.splits.length > 1, `${copy.copy} spans splits`);
    if (copy.crossClass) t.true(leak!.labels.length > 1, `${copy.copy} spans classes`);
  }

  const issues = new Map(result.label_issues.map((issue) => [issue.path, issue]));
  const caught = planted.moved.filter((m) => issues.has(m.path));
  const rightSuggestion = caught.filter((m) => issues.get(m.path)!.suggested_label === m.trueLabel);
  t.log(
    `moved photos: ${caught.length}/${planted.moved.length} flagged (recall ${(caught.length / planted.moved.length).toFixed(3)}), ` +
      `${rightSuggestion.length} with their true class suggested; ${result.label_issues.length} issues in all; ` +
      `k-fold accuracy ${result.summary.oos_accuracy}`,
  );
  const rank = planted.moved.map((m) => result.label_issues.findIndex((issue) => issue.path === m.path)).filter((r) => r >= 0);
  t.log(`ranks of the moved photos among the issues: ${rank.sort((a, b) => a - b).join(', ')}`);
  t.true(caught.length / planted.moved.length >= 0.6, 'most moved photos are flagged');
  t.log(`seconds: ${JSON.stringify(result.seconds)}`);

  const stored = latestAudit<Omit<AuditResult, 'audit_id'>>(cache, featureSet.id)!;
  t.is(stored.id, result.audit_id);
  t.deepEqual(stored.result.duplicate_groups, result.duplicate_groups);
  t.is(stored.map.length, result.summary.images);
  t.true(stored.map.every((p: MapPoint) => Number.isFinite(p.x) && Number.isFinite(p.y)));
});

serialTestWithShared('pipeline audit --json prints the documented fields; a second run gives the same findings and map', async (t) => {
  await prepare();
  const first = await runPipeline(temp.dir, ['audit', '--db', db, '--json']);
  t.is(first.code, 0, first.stderr);
  const json = JSON.parse(first.stdout) as AuditResult;
  for (const key of ['duplicate_groups', 'leaks', 'label_issues', 'outliers', 'summary', 'test_accuracy'] as const) t.true(key in json, key);
  const group = json.duplicate_groups[0];
  t.deepEqual(Object.keys(group).sort(), ['kind', 'labels', 'paths', 'split']);
  t.deepEqual(Object.keys(json.label_issues[0]).sort(), ['given_label', 'path', 'score', 'suggested_label']);
  t.deepEqual(Object.keys(json.outliers[0]).sort(), ['label', 'path', 'score']);
  t.deepEqual(Object.keys(json.leaks[0]).sort(), ['group', 'labels', 'splits']);
  t.is(json.test_accuracy, null, 'no sweep yet');

  const cache = openDatabase(db);
  t.teardown(() => cache.close());
  const [featureSet] = listFeatureSets(cache);
  const mapBefore = latestAudit(cache, featureSet.id)!.map;
  const second = await runPipeline(temp.dir, ['audit', '--db', db, '--json']);
  t.is(second.code, 0, second.stderr);
  const again = JSON.parse(second.stdout) as AuditResult;
  const { audit_id: _a, seconds: _s, ...findings } = json;
  const { audit_id: _b, seconds: _t, ...findingsAgain } = again;
  t.deepEqual(findingsAgain, findings);
  t.deepEqual(latestAudit(cache, featureSet.id)!.map, mapBefore);

  const text = await runPipeline(temp.dir, ['audit', '--db', db, '--top', '3']);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /duplicate groups\s+\d+ \(\d+ exact, \d+ near\)/);
  t.regex(text.stdout, /suspected label errors/);
});

serialTestWithShared('pipeline audit refuses bad flags in one line naming the flag', async (t) => {
  await prepare();
  for (const [flag, value] of [['--cosine', '1.5'], ['--phash-distance', '65'], ['--folds', '2'], ['--top', '0']]) {
    const result = await runPipeline(temp.dir, ['audit', '--db', db, flag, value]);
    t.is(result.code, 1);
    t.is(result.stderr.trim().split('\n').length, 1, result.stderr);
    t.true(result.stderr.includes(flag), result.stderr);
  }
  const missing = await runPipeline(temp.dir, ['audit', '--db', join(temp.dir, 'nothing.sqlite'), '--json']);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /^pipeline: the cache holds no features yet/);
});

test.after.always(() => temp.remove());
