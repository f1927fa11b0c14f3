/**
 * `pipeline report --html`: the page is self-contained (no external URLs), every plot is an
 * inline SVG with marks, text from the facts is escaped, degenerate sweeps still render, and
 * in a real headless Chromium the page loads offline without errors, every plot has a size
 * and every thumbnail decodes. A full-page screenshot is kept for a human to look at.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { MisclassifiedImage, ReportFacts, RunFacts, VariantFacts } from '../stages/report.js';
import { esc, renderHtml } from '../stages/report/html.js';
import { classTint, writeImage } from './helpers/images.js';
import { rng } from './helpers/random-model.js';
import { launchChromium, openFile, testWithChromium } from './helpers/browser.js';
import { fileTempDir } from './helpers/shared.js';

const LABELS = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash'];
const DROPOUTS = [0, 0.2, 0.4, 0.6];
const RATES = [0.0003, 0.001, 0.003, 0.01];
const SEEDS = [1, 2, 3];
/** A path that cannot be read and needs escaping: it must become a placeholder, escaped. */
const NASTY_PATH = 'trash/<b>bold</b> & "odd".jpg';

interface FixtureOptions {
  readonly dropouts?: readonly number[];
  readonly rates?: readonly number[];
  readonly labels?: readonly string[];
  readonly misclassified?: readonly MisclassifiedImage[];
  readonly epochs?: number;
}

const round = (value: number, digits = 4) => Number(value.toFixed(digits));

/** A realistic sweep: accuracy peaks at dropout 0.2, learning rate 0.001; the winner is rank 1. */
function makeFacts(options: FixtureOptions = {}): ReportFacts {
  const { dropouts = DROPOUTS, rates = RATES, labels = LABELS, epochs = 20 } = options;
  const random = rng(7);
  const base = { epochs: 50, batch_size: 32, optimizer: 'adam', hidden_units: 0, weight_decay: 0, label_smoothing: 0, class_weight: 'none' };
  const runs: RunFacts[] = [];
  const variants: Omit<VariantFacts, 'rank'>[] = [];
  for (const dropout of dropouts) {
    for (const rate of rates) {
      const params = { dropout, learning_rate: rate, ...base };
      const quality = 0.9 - 0.25 * (dropout - 0.2) ** 2 - 0.02 * Math.log10(rate / 0.001) ** 2;
      const vals = SEEDS.map(() => quality + (random() - 0.5) * 0.02);
      const tests = vals.map((v) => v - 0.01 + (random() - 0.5) * 0.02);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const std = (xs: number[]) => Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1));
      const variant = `dropout=${dropout},learning_rate=${rate}`;
      SEEDS.forEach((seed, i) =>
        runs.push({
          run_key: `${variant}/seed=${seed}`,
          variant,
          params,
          seed,
          best_epoch: 14,
          epochs_run: epochs,
          train_loss: 0.2,
          train_accuracy: 0.95,
          val_loss: 1 - vals[i],
          val_accuracy: vals[i],
          test_loss: 1 - tests[i],
          test_accuracy: tests[i],
          test_accuracy_single_view: tests[i] - 0.02,
          macro_f1: tests[i] - 0.01,
          train_seconds: 1.5 + random(),
        }),
      );
      variants.push({
        params,
        seeds: [...SEEDS],
        metric_mean: mean(vals),
        metric_std: std(vals),
        val_accuracy_mean: mean(vals),
        val_accuracy_std: std(vals),
        val_loss_mean: 1 - mean(vals),
        test_accuracy_mean: mean(tests),
        test_accuracy_std: std(tests),
        test_accuracy_single_view_mean: mean(tests) - 0.02,
      });
    }
  }
  const ranked: VariantFacts[] = variants
    .sort((a, b) => b.metric_mean - a.metric_mean)
    .map((v, i) => ({ ...v, rank: i + 1 }));
  const winner = ranked[0];
  const winnerRuns = runs.filter((r) => r.params === winner.params).sort((a, b) => b.val_accuracy - a.val_accuracy);
  const bestRun = winnerRuns[0];

  // A confusion matrix of ~20 test images per class, mostly right.
  const confusion = labels.map((_, i) =>
    labels.map((__, j) => (i === j ? 16 + Math.floor(random() * 4) : random() < 0.3 ? 1 + Math.floor(random() * 2) : 0)),
  );
  const per_class = labels.map((label, c) => {
    const tp = confusion[c][c];
    const support = confusion[c].reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[c], 0);
    const precision = predicted ? tp / predicted : 0;
    const recall = support ? tp / support : 0;
    return { label, precision, recall, f1: precision + recall ? (2 * precision * recall) / (precision + recall) : 0, support };
  });
  const curve = (from: number, to: number, noise: number) =>
    Array.from({ length: epochs }, (_, e) => round(to + (from - to) * Math.exp(-e / 4) + (random() - 0.5) * noise));

  return {
    sweep: {
      id: 3,
      status: 'done',
      metric: { name: 'val_accuracy', goal: 'maximize' },
      seeds: [...SEEDS],
      planned_runs: runs.length,
      finished_runs: runs.length,
      wall_seconds: 83.4,
      started_at: '2025-05-01T10:00:00.000Z',
      trainer: 'wasm-simd',
      split: 'random 70/15/15 (seed 0)',
      split_sizes: { train: 1769, val: 379, test: 379 },
    },
    extraction: {
      feature_set: 'fs-a1b2c3d4',
      model: '../shared/models/mobilenet_v2_1.00_224_no_top/model.json',
      alpha: 1,
      input_size: '224x224',
      size_feature_sets: [{ size: '224x224', feature_set: 'fs-a1b2c3d4' }],
      resize: 'center-crop',
      backend: 'onnx',
      dataset_root: '/data/trash<net> & co',
      images: 2527,
      failures: 2,
      images_per_second: 143.2,
    },
    labels: [...labels],
    best: {
      params: winner.params,
      run_key: bestRun.run_key,
      seed: bestRun.seed,
      best_epoch: 14,
      val_accuracy: bestRun.val_accuracy,
      val_accuracy_mean: winner.val_accuracy_mean,
      test_accuracy: bestRun.test_accuracy,
      test_accuracy_mean: winner.test_accuracy_mean,
      test_accuracy_std: winner.test_accuracy_std,
      test_accuracy_single_view: bestRun.test_accuracy_single_view,
      test_accuracy_single_view_mean: winner.test_accuracy_single_view_mean,
      inputs: { sizes: ['224x224'], views: ['original'], standardize: false },
      macro_f1: bestRun.macro_f1,
      per_class,
      confusion,
      curves: {
        train_loss: curve(1.8, 0.15, 0.03),
        val_loss: curve(1.7, 0.35, 0.06),
        train_accuracy: curve(0.3, 0.97, 0.01),
        val_accuracy: curve(0.35, 0.9, 0.02),
      },
      misclassified: [...(options.misclassified ?? [])],
    },
    variants: ranked,
    varying_params: [...(dropouts.length > 1 ? ['dropout'] : []), ...(rates.length > 1 ? ['learning_rate'] : [])],
    runs,
    audit: null,
  };
}

/** Probabilities over labels peaking at `predicted`, with some weight on `truth`. */
function probabilities(labels: readonly string[], truth: number, predicted: number, seed: number): Record<string, number> {
  const random = rng(seed);
  const raw = labels.map((_, c) => (c === predicted ? 3 + random() * 3 : c === truth ? 1 + random() * 2 : random() * 0.6));
  const sum = raw.reduce((a, b) => a + b, 0);
  return Object.fromEntries(labels.map((label, c) => [label, round(raw[c] / sum)]));
}

/** Misclassified test images written as small JPEGs under `root`, plus the unreadable NASTY_PATH. */
async function makeMisclassified(root: string): Promise<MisclassifiedImage[]> {
  const out: MisclassifiedImage[] = [];
  const pairs: [number, number][] = [[0, 3], [1, 4], [1, 4], [2, 1], [3, 0], [4, 1], [5, 4], [5, 2]];
  for (const [i, [truth, predicted]] of pairs.entries()) {
    const path = `${LABELS[truth]}/img_${String(i).padStart(3, '0')}.jpg`;
    const wide = i % 2 === 0;
    await writeImage(join(root, path), { width: wide ? 96 : 64, height: wide ? 72 : 96, seed: 100 + i, tint: classTint(truth) });
    out.push({ path, true_label: LABELS[truth], predicted_label: LABELS[predicted], probabilities: probabilities(LABELS, truth, predicted, i) });
  }
  out.push({ path: NASTY_PATH, true_label: 'trash', predicted_label: 'paper', probabilities: probabilities(LABELS, 5, 3, 99) });
  return out;
}

const figures = (html: string) => [...html.matchAll(/<figure[^>]*data-plot="([^"]+)"[^>]*>([\s\S]*?)<\/figure>/g)].map((m) => ({ id: m[1], body: m[2] }));

function checkPlots(t: import('ava').ExecutionContext, html: string): void {
  const plots = figures(html);
  t.deepEqual(plots.map((p) => p.id).sort(), ['confusion', 'curves', 'heatmap', 'per-class']);
  for (const plot of plots) {
    t.regex(plot.body, /<svg[\s\S]*<\/svg>/, `${plot.id}: an inline <svg>`);
    t.regex(plot.body, /class="mark-[a-z]+ role-mark/, `${plot.id}: the svg has marks`);
    t.notRegex(plot.body, /plot-error/, `${plot.id}: drawn without error`);
  }
}

function checkSelfContained(t: import('ava').ExecutionContext, html: string): void {
  t.notRegex(html, /\b(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?\/\//i, 'no external src/href');
  t.notRegex(html, /url\(\s*["']?(?:https?:)?\/\//i, 'no external url() in CSS or SVG');
  t.notRegex(html, /@import/i);
  t.notRegex(html, /<script/i, 'no script needed');
  t.notRegex(html, /<link/i);
}

const fixture = fileTempDir('pipeline-report-html-');
let imageRoot = '';
let misclassified: MisclassifiedImage[] = [];

test.before(async () => {
  imageRoot = join(fixture.dir, 'images');
  misclassified = await makeMisclassified(imageRoot);
});
test.after.always(() => fixture.remove());

test('the html report is self-contained, escaped, and draws every plot as inline SVG', async (t) => {
  const facts = makeFacts({ misclassified });
  const html = await renderHtml(facts, { imageRoot });
  t.true(html.startsWith('<!doctype html>'));
  checkSelfContained(t, html);
  checkPlots(t, html);

  // Text facts.
  for (const text of ['Sweep 3', 'fs-a1b2c3d4', 'wasm-simd', '1769 train / 379 val / 379 test', '143.2', '1 m 23 s', 'macro-F1']) {
    t.true(html.includes(text), `mentions ${text}`);
  }
  t.true(html.includes(`${(facts.best.test_accuracy_mean * 100).toFixed(2)}%`), 'test accuracy mean');
  t.true(html.includes(facts.best.run_key), 'selected run');
  const variantRows = html.match(/<section class="card" id="variants">[\s\S]*?<\/section>/)![0].match(/<tr[ >]/g)!;
  t.is(variantRows.length, 1 + 16, 'header + 16 variants');
  // The winner comes before the plots and the table.
  t.true(html.indexOf('id="winner"') < html.indexOf('data-plot="heatmap"'));
  t.true(html.indexOf('data-plot="heatmap"') < html.indexOf('id="variants"'));

  // Escaping: the nasty path and dataset root appear only escaped.
  t.false(html.includes('<b>bold</b>'), 'path markup is escaped');
  t.false(html.includes('trash<net>'), 'dataset root is escaped');
  t.true(html.includes(esc(NASTY_PATH)));
  t.true(html.includes(esc('/data/trash<net> & co')));

  // Gallery: the eight readable images are embedded, the unreadable one is a placeholder.
  const images = html.match(/<img src="data:image\/jpeg;base64,[A-Za-z0-9+/=]+"/g) ?? [];
  t.is(images.length, 8);
  t.is((html.match(/class="placeholder"/g) ?? []).length, 1);
  t.is((html.match(/<figure class="shot"/g) ?? []).length, 9);
  t.regex(html, /9 test images misclassified/);
});

test('without an image folder every misclassified image is a placeholder with its path', async (t) => {
  const html = await renderHtml(makeFacts({ misclassified }), { imageRoot: null });
  t.false(html.includes('<img'));
  t.is((html.match(/class="placeholder"/g) ?? []).length, 9);
  t.true(html.includes('cardboard/img_000.jpg'));
  checkPlots(t, html);
});

test('labels with markup are escaped inside the plots too', async (t) => {
  const labels = ['a<b', 'c & d', 'e"f', 'g', 'h', 'i'];
  const html = await renderHtml(makeFacts({ labels, dropouts: [0.2], rates: [0.001, 0.01] }), { imageRoot: null });
  checkPlots(t, html);
  t.false(html.includes('a<b'));
  t.false(/c & d/.test(html));
  t.true(html.includes('a&lt;b'));
  checkSelfContained(t, html);
});

test('degenerate sweeps still render every plot', async (t) => {
  const cases: [string, FixtureOptions][] = [
    ['only dropout varies', { rates: [0.001] }],
    ['only learning rate varies', { dropouts: [0.2] }],
    ['neither varies', { dropouts: [0.2], rates: [0.001] }],
    ['random sweep with many values', { dropouts: Array.from({ length: 15 }, (_, i) => round(i / 30, 3)), rates: [0.0004, 0.002] }],
    ['one epoch', { epochs: 1 }],
  ];
  for (const [name, options] of cases) {
    const html = await renderHtml(makeFacts(options), { imageRoot: null });
    t.is(figures(html).length, 4, name);
    for (const plot of figures(html)) t.regex(plot.body, /<svg[\s\S]*role-mark/, `${name}: ${plot.id}`);
  }
  // No curves, no misclassified, an interrupted sweep without wall time: still a page.
  const facts = makeFacts();
  const bare: ReportFacts = {
    ...facts,
    sweep: { ...facts.sweep, status: 'interrupted', wall_seconds: null, finished_runs: 10 },
    extraction: { ...facts.extraction, images_per_second: null, dataset_root: null },
    best: { ...facts.best, curves: { train_loss: [], train_accuracy: [], val_loss: [], val_accuracy: [] }, misclassified: [] },
  };
  const html = await renderHtml(bare, { imageRoot: null });
  t.is(figures(html).length, 4);
  t.regex(html, /class="banner"/);
  t.regex(html, /got every test image right/);
});

test('a sweep over views and standardize: heatmap over those two, the winner inputs and its accuracy without test-time averaging', async (t) => {
  const base = makeFacts();
  const four = ['original', 'hflip', 'vflip', 'rot180'];
  const variants: VariantFacts[] = base.variants.slice(0, 4).map((v, i) => ({
    ...v,
    params: { ...v.params, dropout: 0, learning_rate: 0.001, views: i % 2 === 0 ? four : ['original'], standardize: i < 2 },
    test_accuracy_single_view_mean: i % 2 === 0 ? 0.8712 : v.test_accuracy_mean,
  }));
  const winner = variants[0];
  const facts: ReportFacts = {
    ...base,
    varying_params: ['views', 'standardize'],
    variants,
    best: {
      ...base.best,
      params: winner.params,
      inputs: { sizes: ['448x597', '320x427'], views: four, standardize: true },
      test_accuracy_single_view: 0.87,
      test_accuracy_single_view_mean: 0.8712,
    },
  };
  const html = await renderHtml(facts, { imageRoot: null });
  t.regex(html, /Validation accuracy by views × standardize/);
  const heatmap = figures(html).find((f) => f.id === 'heatmap')!;
  t.regex(heatmap.body, /original\+hflip\+vflip\+rot180/);
  t.regex(heatmap.body, /<svg[\s\S]*role-mark/);
  t.regex(html, /inputs: sizes 448x597 \+ 320x427 \(concatenated\), views original, hflip, vflip, rot180 \(trained on, averaged at val\/test\), z-scored with train statistics/);
  t.regex(html, /id="single-view"><div class="value">87\.12%<\/div><div class="label">test accuracy on original alone/);
});

testWithChromium('report renders in Chromium', async (t) => {
  const facts = makeFacts({ misclassified });
  const html = await renderHtml(facts, { imageRoot });
  const outDir = mkdtempSync(join(tmpdir(), 'pipeline-report-html-shot-'));
  const file = join(outDir, 'report.html');
  writeFileSync(file, html);

  const browser = await launchChromium();
  try {
    const { page, problems } = await openFile(browser, file);
    const plots = await page.$$eval('figure[data-plot]', (elements) =>
      elements.map((element) => {
        const svg = element.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        return {
          id: element.getAttribute('data-plot'),
          width: box?.width ?? 0,
          height: box?.height ?? 0,
          marks: svg ? svg.querySelectorAll('.role-mark > *').length : 0,
        };
      }),
    );
    t.is(plots.length, 4);
    for (const plot of plots) {
      t.true(plot.width > 50 && plot.height > 50, `${plot.id}: svg drawn with a size (${plot.width}x${plot.height})`);
      t.true(plot.marks > 0, `${plot.id}: marks inside`);
    }
    const images = await page.$$eval('#gallery img', (elements) =>
      (elements as HTMLImageElement[]).map((img) => ({ complete: img.complete, width: img.naturalWidth })),
    );
    t.is(images.length, 8);
    t.true(images.every((img) => img.complete && img.width > 0), 'every thumbnail decoded');
    t.deepEqual(problems.consoleErrors, [], 'no console errors');
    t.deepEqual(problems.pageErrors, [], 'no page errors');
    t.deepEqual(problems.networkRequests, [], 'no network requests');
    t.deepEqual(problems.failedRequests, [], 'no failed requests');

    const screenshot = join(outDir, 'report.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    t.log(`screenshot: ${screenshot}`);
    t.log(`page: ${file}`);
  } finally {
    await browser.close();
  }
});
