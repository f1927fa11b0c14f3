/**
 * Every path flag and config field through the real CLI, table-driven: a directory where a
 * file is expected (and a file where a folder is), a missing parent, a parent that is a
 * file, a FIFO, /dev/null, an empty file, a 300-byte name and a 5000-byte path. Each must
 * give exactly one stderr line `pipeline: <flag> <path>: <problem>`, exit 1, and leave
 * every file under the test folder as it was (names, sizes, modification times, and the
 * cache's bytes). A few cases are meant to work (SQLite takes an empty file for a new
 * database, an empty config file means the defaults; missing parents of the cache and of
 * an export folder are created): those must exit 0. predict keeps its documented per-file errors for images that are missing,
 * folders or empty; a FIFO or device among them is refused up front.
 * An unreadable file cannot be made for root (it reads chmod 000 files): that case is
 * skipped with its reason when the suite runs as root.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CliResult, dbFilesSha, errorLines, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS } from '../helpers/fault-fixtures.js';
import { makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const figures = new Figures('paths');
const temp = fileTempDir('pipeline-fault-paths-');
const cwd = temp.dir;
const CACHE = join(cwd, 'cache.sqlite');
const EXPORTED = join(cwd, 'exported');
const IMAGE = join(cwd, 'data', 'a', 'a_0.jpg');
let modelJson: string;

/** The hostile paths, by name. */
const FAULTS = {
  directory: join(cwd, 'a-folder'),
  file: join(cwd, 'a-file.txt'),
  'missing parent': join(cwd, 'no-such-folder', 'x'),
  'parent is a file': join(cwd, 'a-file.txt', 'x'),
  FIFO: join(cwd, 'a-fifo'),
  '/dev/null': '/dev/null',
  'empty file': join(cwd, 'empty.txt'),
  '300-byte name': join(cwd, 'n'.repeat(300)),
  '5000-byte path': join(cwd, ...Array.from({ length: 25 }, () => 'd'.repeat(200))),
} as const;
type Fault = keyof typeof FAULTS;

const RUN_AS_ROOT = process.getuid?.() === 0;

test.before(async () => {
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b'], perClass: 8, width: 48, height: 40, seed: 13000 });
  ({ modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 606 }));
  writeFileSync(join(cwd, 'sweep.yaml'), 'sweep:\n  seeds: [1]\n  parameters:\n    dropout: {value: 0.2}\n    learning_rate: {value: 0.01}\n    epochs: {value: 3}\n');
  for (const args of [
    ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', CACHE],
    ['sweep', '--config', 'sweep.yaml', '--db', CACHE],
    ['export', '--db', CACHE, '--out', EXPORTED],
  ]) {
    const r = await runPipeline(cwd, args);
    if (r.code !== 0) throw new Error(`setup ${args[0]} failed: ${r.stderr}`);
  }
  mkdirSync(FAULTS.directory);
  writeFileSync(FAULTS.file, 'not what was asked for\n');
  writeFileSync(FAULTS['empty file'], '');
  execFileSync('mkfifo', [FAULTS.FIFO]);
  if (!lstatSync(FAULTS.FIFO).isFIFO() || !lstatSync('/dev/null').isCharacterDevice()) throw new Error('the FIFO and /dev/null fixtures are not what the cases claim');
});
test.after.always(async () => {
  figures.write();
  await temp.remove();
});

/** Undoes what a case that works wrote: the folders it created, the empty file it made a database. */
function resetFixtures(): void {
  rmSync(join(cwd, 'no-such-folder'), { recursive: true, force: true });
  for (const suffix of ['-wal', '-shm']) rmSync(`${FAULTS['empty file']}${suffix}`, { force: true });
  writeFileSync(FAULTS['empty file'], '');
}

/** Every entry under the test folder (but the model download cache and SQLite's shared-memory files) with size and mtime. */
function snapshot(dir = cwd, into = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (name === '.model-cache' || name.endsWith('-shm')) continue;
    const info = lstatSync(path);
    into.set(relative(cwd, path), `${info.size} ${info.mtimeMs}`);
    if (info.isDirectory()) snapshot(path, into);
  }
  return into;
}

function changes(before: Map<string, string>, after: Map<string, string>): string[] {
  const keys = new Set([...before.keys(), ...after.keys()]);
  return [...keys].filter((k) => before.get(k) !== after.get(k)).map((k) => (before.has(k) ? (after.has(k) ? `changed ${k}` : `removed ${k}`) : `created ${k}`));
}

/** What a case expects: one error line matching the pattern, or (for paths that are meant to work) exit 0. */
type Expect = RegExp | 'works';

interface Case {
  /** The figure row, e.g. "6.01 --db (extract)". */
  readonly name: string;
  /** How errors name the setting, e.g. `--db` or `cache.db (paths.yaml)`. */
  readonly label: string;
  /** The command with the path put in. */
  readonly args: (path: string) => string[];
  readonly faults: Partial<Record<Fault, Expect>>;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const IS_DIR = /is a directory/;
const NOT_FOLDER = /is a file, expected a folder/;
const PARENT_FILE = /a parent in the path is a file/;
const FIFO = /is a FIFO \(named pipe\)/;
const DEVICE = /is a device/;
const LONG_NAME = /name too long \(a path component over 255 bytes\)/;
const LONG_PATH = /path too long \(over 4096 bytes\)/;
const LONG = { '300-byte name': LONG_NAME, '5000-byte path': LONG_PATH } as const;

/** extract with every flag but the one a case sets (yargs turns a repeated flag into a list). */
const extract = (...more: string[]) => ['extract', ...EXTRACT_FLAGS(modelJson), '--db', CACHE, ...(more.includes('--data') ? [] : ['--data', 'data']), ...more];
/** A config file setting one path field; flags for the others come from `extract`. */
function withConfig(name: string, section: string, field: string, path: string): string {
  const file = join(cwd, `${name}.yaml`);
  writeFileSync(file, `${section}:\n  ${field}: ${JSON.stringify(path)}\n`);
  return file;
}

const CASES: Case[] = [
  {
    name: '6.01 --db (extract: created if missing)',
    label: '--db',
    args: (p) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', p],
    faults: {
      directory: IS_DIR, 'missing parent': 'works', 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, 'empty file': 'works', ...LONG,
    },
  },
  {
    name: '6.02 cache.db in a config file (extract)',
    label: 'cache.db (db.yaml)',
    args: (p) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--config', withConfig('db', 'cache', 'db', p)],
    faults: { directory: IS_DIR, FIFO, '/dev/null': DEVICE },
  },
  {
    name: '6.03 --db (sweep: must exist)',
    label: '--db',
    args: (p) => ['sweep', '--config', 'sweep.yaml', '--db', p],
    faults: { directory: IS_DIR, 'missing parent': /no cache database here/, FIFO, 'empty file': /is empty/, ...LONG },
  },
  {
    name: '6.04 --db (report, cache, export-features: read)',
    label: '--db',
    args: (p) => ['report', '--db', p],
    faults: {
      directory: IS_DIR, 'missing parent': /no cache database here/, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, 'empty file': /is empty/, ...LONG,
    },
  },
  {
    name: '6.05 --data',
    label: '--data',
    args: (p) => extract('--data', p),
    faults: { file: NOT_FOLDER, 'missing parent': /no such folder/, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, ...LONG },
  },
  {
    name: '6.06 dataset.root in a config file',
    label: 'dataset.root (root.yaml)',
    args: (p) => ['extract', ...EXTRACT_FLAGS(modelJson), '--db', CACHE, '--config', withConfig('root', 'dataset', 'root', p)],
    faults: { file: NOT_FOLDER, 'missing parent': /no such folder/, FIFO },
  },
  {
    name: '6.07 --splits',
    label: '--splits',
    args: (p) => extract('--splits', p),
    faults: { file: NOT_FOLDER, 'missing parent': /no such folder/, FIFO, '/dev/null': DEVICE, ...LONG },
  },
  {
    name: '6.08 dataset.splits in a config file',
    label: 'dataset.splits (splits.yaml)',
    args: (p) => [...extract(), '--config', withConfig('splits', 'dataset', 'splits', p)],
    faults: { file: NOT_FOLDER, FIFO },
  },
  {
    name: '6.09 --model (extract)',
    label: '--model',
    args: (p) => ['extract', '--data', 'data', '--size', '64x64', '--backend', 'wasm', '--db', CACHE, '--model', p],
    faults: {
      directory: IS_DIR, 'missing parent': /no such file \(folder .* does not exist\)/, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, 'empty file': /is empty/, ...LONG,
    },
  },
  {
    name: '6.10 model.weights in a config file',
    label: 'model.weights (weights.yaml)',
    args: (p) => ['extract', '--data', 'data', '--size', '64x64', '--backend', 'wasm', '--db', CACHE, '--config', withConfig('weights', 'model', 'weights', p)],
    faults: { directory: IS_DIR, FIFO, 'empty file': /is empty/ },
  },
  {
    name: '6.11 --out (export: missing folders are created)',
    label: '--out',
    args: (p) => ['export', '--db', CACHE, '--out', p],
    faults: { file: NOT_FOLDER, 'missing parent': 'works', 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, ...LONG },
  },
  {
    name: '6.12 --out (export-features)',
    label: '--out',
    args: (p) => ['export-features', '--db', CACHE, '--out', p],
    faults: { file: NOT_FOLDER, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, ...LONG },
  },
  {
    name: '6.13 --weights (export)',
    label: '--weights',
    args: (p) => ['export', '--db', CACHE, '--out', join(cwd, 'not-written'), '--weights', p],
    faults: { directory: IS_DIR, 'missing parent': /no such file/, FIFO, '/dev/null': DEVICE, 'empty file': /is empty/, ...LONG },
  },
  {
    name: '6.14 --html (report)',
    label: '--html',
    args: (p) => ['report', '--db', CACHE, '--html', p],
    faults: {
      directory: /is a directory, expected a file name/, 'missing parent': /folder .*no-such-folder does not exist/, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, ...LONG,
    },
  },
  {
    name: '6.15 --config',
    label: '--config',
    args: (p) => ['cache', '--db', CACHE, '--config', p],
    faults: { directory: IS_DIR, 'missing parent': /no such file/, 'parent is a file': PARENT_FILE, FIFO, '/dev/null': DEVICE, 'empty file': 'works', ...LONG },
  },
  {
    name: '6.16 predict --model',
    label: '--model',
    args: (p) => ['predict', IMAGE, '--model', p],
    faults: { file: /is a file, expected the folder written by pipeline export/, 'missing parent': /no such folder/, FIFO, '/dev/null': DEVICE, ...LONG },
  },
  {
    name: '6.17 predict FILES (a FIFO or device among good images)',
    label: 'image',
    args: (p) => ['predict', IMAGE, p, '--model', EXPORTED],
    faults: { FIFO, '/dev/null': DEVICE, ...LONG },
  },
];

/** Runs one case and says what broke the contract ('' when it held). */
async function tryCase(c: Case, fault: Fault, expect: Expect): Promise<{ problem: string; line: string }> {
  const args = c.args(FAULTS[fault]);
  const before = snapshot();
  const cacheBefore = dbFilesSha(CACHE);
  // A minute is far more than any of these needs: a FIFO that is opened would wait forever.
  const r: CliResult = await runPipeline(cwd, args, { killAfterMs: 60_000 });
  const errors = errorLines(r);
  const line = errors[0] ?? r.stderr.trimEnd().split('\n').slice(-1)[0] ?? '';
  if (r.killed) return { problem: 'hung (killed after 60 s)', line };
  if (expect === 'works') {
    resetFixtures();
    return { problem: r.code === 0 ? '' : `expected to work, exit ${r.code}`, line: r.code === 0 ? 'works (exit 0)' : line };
  }
  const problems: string[] = [];
  if (r.code !== 1) problems.push(`exit ${r.code}`);
  if (r.stderr.trimEnd().split('\n').length !== 1 || errors.length !== 1) problems.push(`stderr is not one 'pipeline:' line: ${JSON.stringify(r.stderr.slice(0, 300))}`);
  const named = new RegExp(`^pipeline: ${escape(c.label)} \\S.*: `);
  if (!named.test(line)) problems.push(`does not name ${c.label}`);
  if (!expect.test(line)) problems.push(`does not match ${expect}`);
  const written = changes(before, snapshot());
  if (written.length) problems.push(`wrote: ${written.slice(0, 3).join(', ')}`);
  if (JSON.stringify(dbFilesSha(CACHE)) !== JSON.stringify(cacheBefore)) problems.push('the cache changed');
  return { problem: problems.join('; '), line };
}

async function runCase(t: ExecutionContext, c: Case): Promise<void> {
  const failed: string[] = [];
  let example = '';
  const faults = Object.entries(c.faults) as [Fault, Expect][];
  for (const [fault, expect] of faults) {
    const { problem, line } = await tryCase(c, fault, expect);
    const shown = line.split(cwd).join('$TMP').replace(/(n{20})n+/, '$1...').replace(/(d{20})[d/]+/, '$1...');
    t.log(`${problem ? 'FAIL' : 'ok  '} ${fault}: ${shown}${problem ? ` (${problem})` : ''}`);
    if (problem) failed.push(`${fault}: ${problem}: ${shown}`);
    else if (!example && expect !== 'works') example = shown;
  }
  const works = faults.filter(([, e]) => e === 'works').map(([f]) => f);
  figures.add({
    case: c.name,
    tries: faults.length,
    result: failed.length
      ? `${failed.length} of ${faults.length} broke the contract: ${failed[0]}`
      : `${faults.map(([f]) => f).join(', ')}: one line naming ${c.label}, exit 1, nothing written` +
        (works.length ? ` (${works.join(', ')}: works, as documented)` : '') +
        `; e.g. \`${example}\``,
    held: failed.length === 0,
  });
  t.deepEqual(failed, []);
}

for (const c of CASES) test.serial(c.name, (t) => runCase(t, c));

test.serial('6.18 predict FILES: a missing file, a folder and an empty file get their own error; the good image is still predicted', async (t) => {
  const files = [IMAGE, FAULTS['missing parent'], FAULTS.directory, FAULTS['empty file']];
  const r = await runPipeline(cwd, ['predict', ...files, '--model', EXPORTED], { killAfterMs: 60_000 });
  const lines = r.stdout.trimEnd().split('\n');
  const expected: [string, RegExp][] = [
    [IMAGE, /^\S+\s+\w+ \d/],
    [FAULTS['missing parent'], /error: no such file$/],
    [FAULTS.directory, /error: is a folder, not an image$/],
    [FAULTS['empty file'], /error: .*empty file/],
  ];
  const problems = expected.flatMap(([file, pattern], i) => (lines[i]?.startsWith(file) && pattern.test(lines[i]) ? [] : [`line ${i + 1}: ${lines[i]} (expected ${pattern})`]));
  if (r.code !== 3) problems.push(`exit ${r.code} (3 means some inputs failed)`);
  if (/^\s+at /m.test(r.stderr) || errorLines(r).length) problems.push(`stderr: ${r.stderr}`);
  if (!/^1 predicted, 3 failed/m.test(r.stdout)) problems.push(`summary: ${lines[lines.length - 1]}`);
  figures.add({
    case: '6.18 predict FILES: missing, folder, empty among good images',
    tries: 3,
    result: problems.length ? problems[0] : 'each gets its own one-line error, the good image is predicted, exit 3 (some inputs failed)',
    held: problems.length === 0,
  });
  t.deepEqual(problems, []);
});

const UNREADABLE = '6.19 unreadable file (chmod 000): --config, --model, --db (report)';
if (RUN_AS_ROOT) {
  figures.skip(UNREADABLE, 'a non-root user: root reads chmod 000 files');
  test.serial.skip(`${UNREADABLE} (needs a non-root user: root reads chmod 000 files)`, () => {});
} else {
  test.serial(UNREADABLE, async (t) => {
    const locked = join(cwd, 'locked.sqlite');
    writeFileSync(locked, 'x');
    chmodSync(locked, 0);
    t.teardown(() => chmodSync(locked, 0o600));
    const failed: string[] = [];
    for (const [label, args] of [
      ['--config', ['cache', '--db', CACHE, '--config', locked]],
      ['--model', ['extract', '--data', 'data', '--size', '64x64', '--backend', 'wasm', '--db', CACHE, '--model', locked]],
      ['--db', ['report', '--db', locked]],
    ] as const) {
      const r = await runPipeline(cwd, [...args]);
      const line = errorLines(r)[0] ?? '';
      if (r.code !== 1 || errorLines(r).length !== 1 || !line.startsWith(`pipeline: ${label} `) || !/permission denied/.test(line)) failed.push(`${label}: exit ${r.code}: ${r.stderr}`);
    }
    figures.add({ case: UNREADABLE, tries: 3, result: failed.length ? failed[0] : 'one line naming the flag, "permission denied", exit 1', held: failed.length === 0 });
    t.deepEqual(failed, []);
  });
}
