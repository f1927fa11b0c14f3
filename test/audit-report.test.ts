/**
 * `pipeline audit` wired into the rest of the CLI, on a generated dataset and a random
 * MobileNetV2 (no ../shared needed): extract stores every image's perceptual hash from the
 * pixels it decodes, the `audit:` section lives in the one config file (flags override it,
 * unknown keys are refused with file:line), and `pipeline report` shows the audit of the
 * reported sweep's feature set: `--json` as an `audit` object, `--html` as an "Audit"
 * section with a map that is checked in headless Chromium.
 */
import { mkdtempSync } from 'node:fs';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import sharp from 'sharp';
import { openDatabase } from '../cache/database.js';
import { listItems } from '../cache/features.js';
import { decodeImage } from '../data/images.js';
import { perceptualHash } from '../data/phash.js';
import type { AuditResult } from '../stages/audit.js';
import { type AuditForReport, type ReportFacts, chooseSweep, gatherReport, reportAudit } from '../stages/report.js';
import { esc, renderHtml } from '../stages/report/html.js';
import { launchChromium, openFile, testWithChromium } from './helpers/browser.js';
import { type GeneratedDataset, makeDataset } from './helpers/images.js';
import { runPipeline } from './helpers/cli.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const SIZE = { height: 64, width: 64 };
const temp = fileTempDir('pipeline-audit-report-');
const dbPath = join(temp.dir, 'cache.sqlite');
const configPath = join(temp.dir, 'config.yaml');
/** A byte-identical copy filed under another class, and a smaller re-encoded copy. */
const EXACT_COPY = 'charlie/copy_of_alpha_1.jpg';
const NEAR_COPY = 'bravo/smaller_bravo_2.jpg';
let dataset: GeneratedDataset;

const CONFIG = (modelJson: string, extra = '') => `dataset:
  root: data
cache:
  db: cache.sqlite
model:
  weights: ${JSON.stringify(modelJson)}
  size: 64x64
engine:
  backend: wasm
  batch: 4
  concurrency: 2
sweep:
  seeds: [1]
  parameters:
    dropout: {values: [0, 0.2]}
    learning_rate: {value: 0.003}
    epochs: {value: 15}
audit:
  label_issues:
    folds: 3
    epochs: 20
  map:
    neighbors: 6
    epochs: 60
${extra}`;

let modelJson: string;

test.before(async () => {
  dataset = await makeDataset(join(temp.dir, 'data'), { perClass: 8, width: 96, height: 72 });
  await copyFile(join(dataset.root, 'alpha/alpha_1.jpg'), join(dataset.root, EXACT_COPY));
  await sharp(join(dataset.root, 'bravo/bravo_2.jpg')).resize(72, 54).jpeg({ quality: 60 }).toFile(join(dataset.root, NEAR_COPY));
  ({ modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, layout: 'keras', seed: 5 }));
  await writeFile(configPath, CONFIG(modelJson));
  const extract = await runPipeline(temp.dir, ['extract']);
  if (extract.code !== 0) throw new Error(`extract failed: ${extract.stderr}`);
});
test.after.always(() => temp.remove());

function hashRows(): Map<string, string> {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const rows = db.prepare('SELECT sha256, phash FROM image_hashes').all() as { sha256: string; phash: string }[];
    return new Map(rows.map((r) => [r.sha256, r.phash]));
  } finally {
    db.close();
  }
}

function listing(): { path: string; sha256: string }[] {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const [set] = db.prepare('SELECT id FROM feature_sets').all() as { id: string }[];
    return listItems(db, set.id);
  } finally {
    db.close();
  }
}

test.serial('extract stores one perceptual hash per extracted image, equal to data/phash.ts on the decoded file', async (t) => {
  const hashes = hashRows();
  const items = listing();
  t.is(items.length, 8 * 3 + 2);
  const contents = new Set(items.map((item) => item.sha256));
  t.is(contents.size, 8 * 3 + 1, 'the exact copy shares its content');
  t.deepEqual([...hashes.keys()].sort(), [...contents].sort());
  for (const item of items) {
    const pixels = await decodeImage(await readFile(join(dataset.root, item.path)), SIZE, 'fill');
    t.is(hashes.get(item.sha256), perceptualHash(pixels, SIZE.width, SIZE.height), item.path);
  }
  // A rerun decodes nothing and keeps the hashes.
  const again = await runPipeline(temp.dir, ['extract']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(hashRows(), hashes);
});

test.serial('audit reads the hashes extract stored (phash_computed 0) and hashes only images that lack one', async (t) => {
  const first = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(first.code, 0, first.stderr);
  const result = JSON.parse(first.stdout) as AuditResult;
  t.is(result.summary.phash_computed, 0);
  t.is(result.summary.images, 8 * 3 + 2);
  t.true(result.duplicate_groups.some((g) => g.kind === 'exact' && g.paths.includes(EXACT_COPY)));

  // As for a cache extracted before extract stored hashes: the audit computes the same ones.
  const before = hashRows();
  const [a, b] = listing().map((item) => item.sha256);
  const db = openDatabase(dbPath);
  db.prepare('DELETE FROM image_hashes WHERE sha256 IN (?, ?)').run(a, b);
  db.close();
  const second = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(second.code, 0, second.stderr);
  t.is((JSON.parse(second.stdout) as AuditResult).summary.phash_computed, 2);
  t.deepEqual(hashRows(), before);
});

function storedAuditConfig(): { label_issues: { folds: number; epochs: number }; duplicates: { cosine: number } } {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const row = db.prepare('SELECT config_json FROM audits ORDER BY id DESC LIMIT 1').get() as { config_json: string };
    return JSON.parse(row.config_json);
  } finally {
    db.close();
  }
}

test.serial('the audit: section of the config file is used, flags override it, unknown keys are refused with file:line', async (t) => {
  const fromFile = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(fromFile.code, 0, fromFile.stderr);
  t.like(storedAuditConfig(), { label_issues: { folds: 3, epochs: 20 }, duplicates: { cosine: 0.85 } });

  const flagged = await runPipeline(temp.dir, ['audit', '--json', '--folds', '4', '--cosine', '0.9']);
  t.is(flagged.code, 0, flagged.stderr);
  t.like(storedAuditConfig(), { label_issues: { folds: 4, epochs: 20 }, duplicates: { cosine: 0.9 } });

  const bad = join(temp.dir, 'bad.yaml');
  await writeFile(bad, CONFIG(modelJson).replace('    folds: 3\n', '    folds: 3\n    fold: 2\n'));
  for (const command of ['audit', 'sweep']) {
    const refused = await runPipeline(temp.dir, [command, '--config', bad]);
    t.is(refused.code, 1, refused.stderr);
    t.is(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    t.regex(refused.stderr, /bad\.yaml:21:5: audit\.label_issues\.fold: unknown key \(allowed: folds, epochs, learning_rate, dropout, seed\)/);
  }
  await writeFile(bad, CONFIG(modelJson).replace('    folds: 3\n', '    folds: 1\n'));
  const range = await runPipeline(temp.dir, ['audit', '--config', bad]);
  t.is(range.code, 1);
  t.regex(range.stderr, /bad\.yaml:20:12: audit\.label_issues\.folds: /);
});

const reportFile = join(temp.dir, 'report.html');
let audited: AuditResult;

test.serial('report --json carries the audit of the sweep\'s feature set, --html an Audit section with one map mark per image', async (t) => {
  const sweep = await runPipeline(temp.dir, ['sweep']);
  t.is(sweep.code, 0, sweep.stderr);
  const audit = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(audit.code, 0, audit.stderr);
  audited = JSON.parse(audit.stdout) as AuditResult;

  const json = await runPipeline(temp.dir, ['report', '--json']);
  t.is(json.code, 0, json.stderr);
  const facts = JSON.parse(json.stdout) as ReportFacts;
  t.truthy(facts.audit);
  const report = facts.audit!;
  t.deepEqual(Object.keys(report).sort(), ['audit_id', 'created_at', 'summary', 'test_accuracy']);
  t.is(report.audit_id, audited.audit_id);
  t.deepEqual(report.summary, audited.summary);
  // The leak-free accuracy is of the reported sweep (here also the audit's latest one).
  t.deepEqual(report.test_accuracy, audited.test_accuracy);
  t.is(report.test_accuracy.sweep, facts.sweep.id);
  t.is(report.test_accuracy.run_key, facts.best.run_key);
  t.is(report.test_accuracy.test_images, facts.sweep.split_sizes.test);
  t.is(report.test_accuracy.test_accuracy, Number(facts.best.test_accuracy.toFixed(4)));

  const text = await runPipeline(temp.dir, ['report']);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, new RegExp(`^audit ${audited.audit_id}: ${audited.summary.duplicate_groups} duplicate groups \\(`, 'm'));

  const html = await runPipeline(temp.dir, ['report', '--html', reportFile]);
  t.is(html.code, 0, html.stderr);
  const page = await readFile(reportFile, 'utf8');
  const section = page.match(/<section class="card" id="audit"[\s\S]*?<\/section>/)?.[0] ?? '';
  t.true(section.length > 0, 'an Audit section');
  t.true(page.indexOf('id="gallery"') < page.indexOf('id="audit"'), 'after the misclassified gallery');
  t.notRegex(page, /\b(?:src|href)\s*=\s*["']?(?:https?:)?\/\//i, 'nothing external');
  const layer0 = section.match(/<g class="mark-symbol role-mark layer_0_marks"[^>]*>([\s\S]*?)<\/g>/)![1];
  t.is((layer0.match(/<path /g) ?? []).length, audited.summary.images, 'one map mark per image');
  t.regex(section, new RegExp(`data-kind="exact"[\\s\\S]*?data-path="${EXACT_COPY}"`), 'the exact copy is shown in its group');
  t.is((section.match(/<figure class="shot issue"/g) ?? []).length, Math.min(24, audited.label_issues.length));
  t.regex(section, new RegExp(`${audited.summary.duplicate_groups}</div><div class="label">duplicate groups`));

  // Without an audit of the feature set: audit null, no section, and the page has no script.
  const bare = join(temp.dir, 'no-audit.sqlite');
  await copyFile(dbPath, bare);
  const db = openDatabase(bare);
  db.exec('DELETE FROM audit_map; DELETE FROM audits;');
  db.close();
  const none = await runPipeline(temp.dir, ['report', '--json', '--db', bare]);
  t.is(none.code, 0, none.stderr);
  t.is((JSON.parse(none.stdout) as ReportFacts).audit, null);
  t.notRegex((await runPipeline(temp.dir, ['report', '--db', bare])).stdout, /^audit /m);
  const noneHtml = join(temp.dir, 'no-audit.html');
  t.is((await runPipeline(temp.dir, ['report', '--html', noneHtml, '--db', bare])).code, 0);
  const plain = await readFile(noneHtml, 'utf8');
  t.false(plain.includes('id="audit"'));
  t.notRegex(plain, /<script/i);
});

testWithChromium('the report with an audit renders in Chromium: no console errors, one mark per image, a thumbnail on hover', async (t) => {
  t.truthy(audited, 'the report test ran first');
  // Kept after the run (the fixture's folder is removed) for a person to look at.
  const shots = mkdtempSync(join(tmpdir(), 'pipeline-audit-report-shot-'));
  const browser = await launchChromium();
  try {
    const { page, problems } = await openFile(browser, reportFile);
    const marks = await page.$$eval('#audit-map svg .layer_0_marks > path', (paths) => paths.map((p) => p.getAttribute('aria-label')));
    t.is(marks.length, audited.summary.images);
    t.is(new Set(marks).size, marks.length, 'each image once');
    const box = await page.locator('#audit-map svg').boundingBox();
    t.true(box !== null && box.width > 300 && box.height > 200, `map drawn with a size (${box?.width}x${box?.height})`);

    // Hover a few marks: the tip shows the image under the mouse, decoded.
    let shown = 0;
    for (const index of [0, Math.floor(marks.length / 2), marks.length - 1]) {
      const mark = page.locator('#audit-map svg .layer_0_marks > path').nth(index);
      await mark.scrollIntoViewIfNeeded();
      const at = (await mark.boundingBox())!;
      const [x, y] = [at.x + at.width / 2, at.y + at.height / 2];
      await page.mouse.move(x, y);
      const under = await page.evaluate(([px, py]) => document.elementFromPoint(px, py)?.closest('path[aria-label]')?.getAttribute('aria-label') ?? null, [x, y]);
      await page.waitForSelector('#audit-tip:not([hidden])', { timeout: 5000 });
      await page.waitForFunction(() => (document.querySelector('#audit-tip img') as HTMLImageElement).complete);
      const tip = await page.$eval('#audit-tip', (element) => ({
        path: element.querySelector('.tip-path')!.textContent,
        info: element.querySelector('.tip-info')!.textContent,
        width: (element.querySelector('img') as HTMLImageElement).naturalWidth,
        visible: element.getBoundingClientRect().width > 0,
      }));
      t.is(tip.path as string | null, under, 'the tip names the image under the mouse');
      t.true(tip.visible);
      t.true(tip.width > 0, 'its thumbnail decoded');
      t.truthy(tip.info);
      shown++;
      if (index === 0) {
        const shot = join(shots, 'report-audit-map.png');
        await page.locator('#audit-map').screenshot({ path: shot });
        t.log(`map screenshot (hovering ${under}): ${shot}`);
      }
    }
    t.is(shown, 3);
    await page.mouse.move(1, 1);
    t.true(await page.$eval('#audit-tip', (element) => (element as HTMLElement).hidden), 'the tip hides when the mouse leaves');

    const images = await page.$$eval('#audit img[src^="data:"]', (elements) => (elements as HTMLImageElement[]).map((img) => img.complete && img.naturalWidth > 0));
    t.true(images.length > 0 && images.every(Boolean), 'every audit thumbnail decoded');
    t.deepEqual(problems.consoleErrors, [], 'no console errors');
    t.deepEqual(problems.pageErrors, [], 'no page errors');
    t.deepEqual(problems.networkRequests, [], 'no network requests');
    const full = join(shots, 'report-audit.png');
    await copyFile(reportFile, join(shots, 'report.html'));
    await page.screenshot({ path: full, fullPage: true });
    t.log(`page screenshot: ${full}`);
  } finally {
    await browser.close();
  }
});

test.serial('paths and labels with markup are escaped everywhere in the Audit section, and cannot close its script', async (t) => {
  t.truthy(audited, 'the report test ran first');
  const nasty = 'alpha/</script><script>alert(1)</script> & "x".jpg';
  const db = openDatabase(dbPath, { readonly: true });
  let facts: ReportFacts;
  let audit: AuditForReport;
  try {
    const sweep = await chooseSweep(db, undefined);
    const stored = (await reportAudit(db, sweep.featureSet))!;
    // The same audit with one image renamed to a hostile path, in the map, a group and the label issues.
    const rename = (path: string) => (path === stored.points[0].path ? nasty : path);
    const result = stored.stored.result;
    audit = {
      stored: {
        ...stored.stored,
        result: {
          ...result,
          duplicate_groups: result.duplicate_groups.map((g) => ({ ...g, paths: g.paths.map(rename) })),
          label_issues: [{ path: nasty, given_label: 'a<b>', suggested_label: 'c&d', score: 0.01 }, ...result.label_issues],
        },
      },
      points: stored.points.map((p) => ({ ...p, path: rename(p.path) })),
    };
    facts = await gatherReport(db, sweep, audit);
  } finally {
    db.close();
  }
  const html = await renderHtml(facts, { imageRoot: dataset.root, audit });
  const section = html.match(/<section class="card" id="audit"[\s\S]*?<\/section>/)![0];
  t.false(html.includes('<script>alert'), 'no injected script');
  t.false(section.includes('a<b>'));
  t.true(section.includes(esc(nasty)));
  t.is((html.match(/<script/g) ?? []).length, 2, 'the hover data and the hover script only');
  const hover = JSON.parse(html.match(/<script type="application\/json" id="audit-hover">([\s\S]*?)<\/script>/)![1]) as Record<string, [string, string]>;
  t.true(nasty in hover, 'the hover data keys the hostile path as it is');
  t.is(Object.keys(hover).length, audited.summary.images);
});
