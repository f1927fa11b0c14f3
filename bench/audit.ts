/**
 * `pipeline audit` on real TrashNet features (224x224, extracted once into the same cache
 * file the sweep benchmark uses), timed part by part over several runs; then the one
 * quadratic part, the all-pairs cosine scan, alone on seeded random 1280-d features of
 * growing N, to show how it grows.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import seedrandom from 'seedrandom';
import { openDatabase } from '../cache/database.js';
import { runAudit } from '../stages/audit.js';
import { DEFAULT_AUDIT_CONFIG } from '../stages/audit/config.js';
import { findNeighbours } from '../stages/audit/neighbours.js';
import { runExtract } from '../stages/extract.js';
import { median } from './machine.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SHARED = resolve(REPO_ROOT, '..', 'shared');
const FEATURE_CACHE = join(REPO_ROOT, 'runs/bench/trashnet-224.sqlite');
const REPEATS = 3;
const SCALING_SIZES = [1250, 2500, 5000, 10000];

const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
};

async function auditTrashnet(): Promise<void> {
  if (!existsSync(SHARED)) {
    console.log(`skipped the TrashNet audit: ${SHARED} not found`);
    return;
  }
  const summary = await runExtract({
    dataset: { root: join(SHARED, 'datasets/trashnet'), url: null, sha256: null, splits: null },
    model: { weights: join(SHARED, 'models/mobilenet_v2_1.00_224_no_top/model.json'), size: { height: 224, width: 224 }, resize: 'fill' },
    db: FEATURE_CACHE,
    backend: 'onnx',
    batch: 8,
    concurrency: 4,
  });
  const db = openDatabase(FEATURE_CACHE);
  try {
    const runs: { hashes: number; neighbours: number; label_issues: number; map: number; total: number; cpu: number }[] = [];
    for (let i = 0; i < REPEATS + 1; i++) {
      const cpu = process.cpuUsage();
      const result = await runAudit({ db, featureSet: summary.featureSet, config: DEFAULT_AUDIT_CONFIG });
      const run = { ...result.seconds, cpu: cpuSeconds(cpu) };
      if (result.summary.phash_computed > 0) {
        console.log(`first audit computed ${result.summary.phash_computed} perceptual hashes from the files: ${run.hashes.toFixed(2)} s (once; stored)`);
        continue;
      }
      runs.push(run);
      if (runs.length === 1) {
        const s = result.summary;
        console.log(
          `${s.images} images: ${s.duplicate_groups} duplicate groups (${s.exact_groups} exact), ${s.cross_split_groups} across splits, ` +
            `${s.cross_class_groups} across classes, ${s.test_images_with_copy_in_train_val} test images with a copy in train/val, ${s.label_issues} label issues`,
        );
      }
      if (runs.length === REPEATS) break;
    }
    const med = (key: keyof (typeof runs)[number]) => median(runs.map((r) => r[key])).toFixed(2);
    console.log(
      `audit of TrashNet, median of ${runs.length} runs: total ${med('total')} s wall, ${med('cpu')} s CPU (all threads); ` +
        `loading + hashes ${med('hashes')} s, all-pairs neighbours ${med('neighbours')} s, k-fold heads + map ${med('label_issues')} s ` +
        `(of which the map ${med('map')} s, laid out while the folds train)`,
    );
    console.log(`  runs: ${runs.map((r) => `${r.total.toFixed(2)} s`).join(', ')}`);
  } finally {
    db.close();
  }
}

async function neighbourScaling(): Promise<void> {
  const dim = 1280;
  const rows: { n: number; seconds: number }[] = [];
  for (const n of SCALING_SIZES) {
    const random = seedrandom(`bench:audit-scaling:${n}`);
    const vectors = Float32Array.from({ length: n * dim }, () => random());
    const labels = Int32Array.from({ length: n }, (_, i) => i % 6);
    const contents = Int32Array.from({ length: n }, (_, i) => i);
    const times: number[] = [];
    for (let r = 0; r < (n <= 2500 ? REPEATS : 1); r++) {
      const started = performance.now();
      await findNeighbours({ vectors, dim, labels, contents, k: 14, classK: 10, pairCosine: 0.85 });
      times.push((performance.now() - started) / 1000);
    }
    rows.push({ n, seconds: median(times) });
    const last = rows.at(-1)!;
    const pairs = (n * (n - 1)) / 2;
    console.log(`all-pairs cosine scan, N=${n}: ${last.seconds.toFixed(2)} s (${((pairs * dim) / last.seconds / 1e9).toFixed(2)} G multiply-adds/s)`);
  }
  const [a, b] = [rows[0], rows.at(-1)!];
  console.log(`  growth exponent from N=${a.n} to N=${b.n}: ${(Math.log(b.seconds / a.seconds) / Math.log(b.n / a.n)).toFixed(2)} (2 = quadratic)`);
}

export async function run(): Promise<void> {
  await auditTrashnet();
  await neighbourScaling();
}
