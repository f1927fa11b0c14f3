/**
 * Fault cases 4.x (README, "Fault injection"): hand-edited config files, bad flags, bad model sources and unusable
 * database files. Each must give exactly one `pipeline: ...` line on stderr (naming the
 * file, line and column for config files), exit code 1, and leave an existing cache's
 * bytes unchanged (sha256 of the database and its WAL before and after).
 *
 * Read-only databases are tested with `chattr +i` (root ignores file modes) and with a
 * read-only bind mount; a full disk with a 1 MiB tmpfs. Where the machine refuses those
 * (no root, no CAP_SYS_ADMIN, no chattr), the test is registered as skipped with the reason.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { type CliResult, dbFilesSha, errorLines, readCache, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import { EXTRACT_FLAGS, SWEEP_YAML } from '../helpers/fault-fixtures.js';
import { type FaultServer, faultServer } from '../helpers/http-server.js';
import { makeDataset } from '../helpers/images.js';
import { writeModelFolder, writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const figures = new Figures('config-errors');
const temp = fileTempDir('pipeline-fault-config-');
const cwd = temp.dir;
const CACHE = join(cwd, 'cache.sqlite');
let modelJson: string;
let server: FaultServer;

test.before(async () => {
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b'], perClass: 3, width: 48, height: 40, seed: 11000 });
  ({ modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 505 }));
  const extract = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', CACHE]);
  if (extract.code !== 0) throw new Error(`setup extract failed: ${extract.stderr}`);
  server = await faultServer({
    '/html/model.json': { type: 'text/html', body: Buffer.from('<!doctype html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n') },
  });
});
test.after.always(async () => {
  figures.write();
  await server?.close();
  await temp.remove();
});

interface Outcome {
  readonly ok: boolean;
  readonly line: string;
  readonly why: string;
}

/** The contract for one rejected command, without failing the test (the caller records and asserts). */
function judge(r: CliResult, pattern: RegExp, strict: boolean, cacheBefore?: ReturnType<typeof dbFilesSha>, cachePath = CACHE): Outcome {
  const errors = errorLines(r);
  const lines = r.stderr.trimEnd().split('\n');
  const line = errors[0] ?? '';
  const problems: string[] = [];
  if (r.code !== 1) problems.push(`exit ${r.code}`);
  if (errors.length !== 1) problems.push(`${errors.length} 'pipeline:' lines`);
  if (errors.length && lines[lines.length - 1] !== line) problems.push('error is not the last line');
  if (strict && lines.length !== 1) problems.push(`${lines.length} stderr lines`);
  if (/^\s+at /m.test(r.stderr)) problems.push('stack trace');
  if (line.includes('unexpected error')) problems.push('"unexpected error"');
  if (!pattern.test(line)) problems.push(`message does not match ${pattern}`);
  if (cacheBefore) {
    const after = dbFilesSha(cachePath);
    if (after.db !== cacheBefore.db || after.wal !== cacheBefore.wal) problems.push('cache bytes changed');
  }
  return { ok: problems.length === 0, line: line || r.stderr.split('\n').slice(-3).join(' / '), why: problems.join(', ') };
}

/**
 * Runs each variant and records one figure row for the case. Returns the broken variants
 * (the caller asserts at its end, so that a failure still lets the rest of a test record).
 */
async function rejectAll(
  t: ExecutionContext,
  name: string,
  variants: { args: string[]; pattern: RegExp; config?: string; strict?: boolean; db?: string }[],
): Promise<string[]> {
  const outcomes: (Outcome & { command: string })[] = [];
  for (const [i, v] of variants.entries()) {
    const configPath = join(cwd, `case-${name.slice(0, 4)}-${i}.yaml`);
    if (v.config !== undefined) writeFileSync(configPath, v.config);
    const args = v.args.map((a) => (a === '$CONFIG' ? configPath : a));
    const before = dbFilesSha(v.db ?? CACHE);
    const r = await runPipeline(cwd, args);
    const outcome = judge(r, v.pattern, v.strict ?? true, before, v.db ?? CACHE);
    outcomes.push({ ...outcome, command: args[0] });
    t.log(`${outcome.ok ? 'ok  ' : 'FAIL'} ${args[0]} ${v.config ? JSON.stringify(v.config) : args.slice(1).join(' ')} -> ${outcome.line}${outcome.ok ? '' : ` (${outcome.why})`}`);
  }
  const failed = outcomes.filter((o) => !o.ok);
  const short = (line: string) => line.split(cwd + '/').join('').replace(/http:\/\/127\.0\.0\.1:\d+/g, 'URL');
  figures.add({
    case: name,
    tries: variants.length,
    result: failed.length
      ? `${failed.length} of ${variants.length} broke the contract (${[...new Set(failed.map((f) => f.command))].join(', ')}): ${failed[0].why}: \`${short(failed[0].line)}\``
      : `one line, exit 1, cache unchanged in all ${variants.length}; e.g. \`${short(outcomes[0].line)}\``,
    held: failed.length === 0,
  });
  return failed.map((f) => `${name}: ${f.command}: ${f.why}: ${f.line}`);
}

const extractWith = (...more: string[]) => ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', CACHE, ...more];
const withConfig = () => [...extractWith(), '--config', '$CONFIG'];

test.serial('4.01 malformed YAML: file:line:col', async (t) => {
  t.deepEqual(await rejectAll(t, '4.01 malformed YAML', [
    { config: 'model:\n  size: [64x64\nengine:\n  batch: 4\n', args: withConfig(), pattern: /\.yaml:\d+:\d+: invalid YAML/ },
    { config: 'engine:\n\tbatch: 4\n', args: withConfig(), pattern: /\.yaml:2:1: invalid YAML/ },
    { config: 'model:\n  size: 64x64\n  size: 96x96\n', args: withConfig(), pattern: /\.yaml:3:3: invalid YAML/ },
    { config: 'model:\n  size: "64x64\n', args: withConfig(), pattern: /\.yaml:\d+:\d+: invalid YAML/ },
  ]), []);
});

test.serial('4.02 unknown keys: file:line:col of the key', async (t) => {
  t.deepEqual(await rejectAll(t, '4.02 unknown keys', [
    { config: 'model:\n  sise: 64x64\n', args: withConfig(), pattern: /\.yaml:2:3: model\.sise: unknown key/ },
    { config: 'modle:\n  size: 64x64\n', args: withConfig(), pattern: /\.yaml:1:1: modle: unknown key/ },
    { config: 'sweep:\n  parameters:\n    dropuot: {value: 0.1}\n', args: withConfig(), pattern: /\.yaml:3:5: sweep\.parameters\.dropuot: unknown key/ },
  ]), []);
});

test.serial('4.03 wrong types: file:line:col of the value', async (t) => {
  t.deepEqual(await rejectAll(t, '4.03 wrong types', [
    { config: 'engine:\n  batch: four\n', args: withConfig(), pattern: /\.yaml:2:10: engine\.batch: / },
    { config: 'model: 5\n', args: withConfig(), pattern: /\.yaml:1:8: model: / },
    { config: 'sweep:\n  seeds: 3\n', args: withConfig(), pattern: /\.yaml:2:10: sweep\.seeds: / },
    { config: '- just\n- a list\n', args: withConfig(), pattern: /\.yaml(:1:1)?: .*(mapping|expected)/ },
  ]), []);
});

test.serial('4.04 out-of-range values: file:line:col of the value', async (t) => {
  t.deepEqual(await rejectAll(t, '4.04 out-of-range values', [
    { config: 'engine:\n  batch: 0\n', args: withConfig(), pattern: /\.yaml:2:10: engine\.batch: / },
    { config: 'engine:\n  concurrency: 1000\n', args: withConfig(), pattern: /\.yaml:2:16: engine\.concurrency: / },
    { config: 'sweep:\n  parameters:\n    dropout: {value: 1.5}\n', args: withConfig(), pattern: /\.yaml:3:(14|22): sweep\.parameters\.dropout/ },
    { config: 'model:\n  size: 16x16\n', args: withConfig(), pattern: /\.yaml:2:9: model\.size: expected HxW/ },
    // YAML reads 0x0 as the hexadecimal number 0: the message may say so, but must point at it.
    { config: 'model:\n  size: 0x0\n', args: withConfig(), pattern: /\.yaml:2:9: model\.size: / },
  ]), []);
});

test.serial('4.05 --size 0x0, abc and friends: one line naming the flag', async (t) => {
  t.deepEqual(await rejectAll(
    t,
    '4.05 bad --size',
    ['0x0', 'abc', '64x', '99999x64', '64x64x3', '', '=-64x64'].map((size) => ({
      args: ['extract', '--data', 'data', '--model', modelJson, '--backend', 'wasm', '--db', CACHE, ...(size.startsWith('=') ? [`--size${size}`] : ['--size', size])],
      pattern: /--size/,
    })),
  ), []);
});

test.serial('4.06-4.08 a model URL serving HTML or 404, and weights of another architecture', async (t) => {
  const other = join(cwd, 'other-arch');
  await writeModelFolder(other, [
    { name: 'dense/kernel', shape: [1280, 10], values: new Float32Array(12800) },
    { name: 'dense/bias', shape: [10], values: new Float32Array(10) },
  ]);
  const wrongShapes = join(cwd, 'wrong-shapes');
  await writeModelFolder(wrongShapes, [{ name: 'Conv1/kernel', shape: [3, 3, 3, 7], values: new Float32Array(189) }]);
  const truncated = join(cwd, 'truncated-weights');
  mkdirSync(truncated, { recursive: true });
  copyFileSync(modelJson, join(truncated, 'model.json'));
  const fd = openSync(join(truncated, 'weights.bin'), 'w');
  writeSync(fd, Buffer.alloc(1000));
  closeSync(fd);
  const model = (source: string) => ['extract', '--data', 'data', '--size', '64x64', '--backend', 'wasm', '--db', CACHE, '--model', source];
  const failed: string[] = [];
  failed.push(...await rejectAll(t, '4.06 model URL serving HTML', [{ args: model(server.url('/html/model.json')), pattern: /HTML/i, strict: false }]));
  failed.push(...await rejectAll(t, '4.07 model URL answering 404', [{ args: model(server.url('/gone/model.json')), pattern: /404/, strict: false }]));
  failed.push(...await rejectAll(t, '4.08 weights of a different architecture', [
    { args: model(join(other, 'model.json')), pattern: /MobileNetV2/, strict: false },
    { args: model(join(wrongShapes, 'model.json')), pattern: /MobileNetV2/, strict: false },
    { args: model(join(truncated, 'model.json')), pattern: /weights|shard/i, strict: false },
  ]));
  t.deepEqual(failed, []);
});

test.serial('4.09 a database file that is not SQLite (text, or a SQLite file with garbage pages)', async (t) => {
  const notDb = join(cwd, 'notes.sqlite');
  writeFileSync(notDb, 'my notes\n'.repeat(100));
  const commands = (db: string) => [
    ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db],
    ['sweep', '--db', db],
    ['report', '--db', db],
    ['cache', '--db', db],
    ['export-features', '--db', db, '--out', join(cwd, 'features-out')],
  ];
  const failed = await rejectAll(
    t,
    '4.09 database file that is not SQLite',
    commands(notDb).map((args) => ({ args, pattern: /not a SQLite database/, strict: false, db: notDb })),
  );
  // A real cache whose pages after the header were overwritten (a disk or copy gone wrong).
  const garbled = join(cwd, 'garbled.sqlite');
  copyFileSync(CACHE, garbled);
  const fd = openSync(garbled, 'r+');
  writeSync(fd, Buffer.alloc(8192, 0xa5), 0, 8192, 1024);
  closeSync(fd);
  failed.push(
    ...(await rejectAll(
      t,
      '4.09b SQLite file with garbage pages',
      commands(garbled).map((args) => ({ args, pattern: /garbled\.sqlite/, strict: false, db: garbled })),
    )),
  );
  t.deepEqual(failed, []);
});

/** Probes a privileged operation once, at registration time, so the skip reason is visible. */
function probe(what: string, run: (dir: string) => void): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'pipeline-fault-probe-'));
  try {
    run(dir);
    return null;
  } catch (error) {
    return `${what}, which failed here: ${(error as Error).message.split('\n')[0]}`;
  } finally {
    try {
      execFileSync('chattr', ['-i', join(dir, 'f')], { stdio: 'ignore' });
    } catch {
      /* nothing to undo */
    }
    try {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const noChattr = probe('chattr +i', (dir) => {
  writeFileSync(join(dir, 'f'), 'x');
  execFileSync('chattr', ['+i', join(dir, 'f')], { stdio: 'pipe' });
});
const noMount = probe('mount (tmpfs, bind)', (dir) => execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' }));

/** A case this machine cannot set up: ava reports it as skipped, and the figures as not held. */
function skipped(name: string, reason: string): void {
  figures.skip(name, reason);
  test.serial.skip(`${name} (needs ${reason})`, () => {});
}

/** Read-only commands on a read-only cache may work (exit 0) or fail in one line; never a stack. */
function readerOutcome(r: CliResult): Outcome {
  if (r.code === 0) return { ok: true, line: 'listed (exit 0)', why: '' };
  return judge(r, /./, false);
}

if (noChattr) skipped('4.10 read-only database (chattr +i)', noChattr);
else {
  test.serial('4.10 read-only database (chattr +i: root cannot write it either)', async (t) => {
    const db = join(cwd, 'immutable.sqlite');
    copyFileSync(CACHE, db);
    execFileSync('chattr', ['+i', db]);
    t.teardown(() => execFileSync('chattr', ['-i', db]));
    const failed = await rejectAll(t, '4.10 read-only database (chattr +i): extract, sweep', [
      { args: ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db], pattern: /immutable\.sqlite/, strict: false, db },
      { args: ['sweep', '--db', db], pattern: /immutable\.sqlite/, strict: false, db },
    ]);
    const before = dbFilesSha(db);
    const readers = await Promise.all([runPipeline(cwd, ['cache', '--db', db]), runPipeline(cwd, ['export-features', '--db', db, '--out', join(cwd, 'ro-export')])]);
    const outcomes = readers.map(readerOutcome);
    const unchanged = JSON.stringify(dbFilesSha(db)) === JSON.stringify(before);
    figures.add({
      case: '4.10b read-only database (chattr +i): cache, export-features',
      tries: 2,
      result: `cache: ${outcomes[0].line}; export-features: ${outcomes[1].line}; bytes ${unchanged ? 'unchanged' : 'CHANGED'}`,
      held: outcomes.every((o) => o.ok) && unchanged,
    });
    t.deepEqual(failed, []);
    for (const o of outcomes) t.true(o.ok, o.why);
    t.true(unchanged);
  });
}

if (noMount) {
  skipped('4.11 read-only file system (bind mount)', noMount);
  skipped('4.12 full disk (1 MiB tmpfs)', noMount);
} else {
  test.serial('4.11 database on a read-only file system (read-only bind mount)', async (t) => {
    const source = join(cwd, 'ro-source');
    const mount = join(cwd, 'ro-mount');
    mkdirSync(source, { recursive: true });
    mkdirSync(mount, { recursive: true });
    copyFileSync(CACHE, join(source, 'cache.sqlite'));
    execFileSync('mount', ['--bind', source, mount]);
    t.teardown(() => execFileSync('umount', [mount]));
    execFileSync('mount', ['-o', 'remount,ro,bind', mount]);
    const db = join(mount, 'cache.sqlite');
    const failed = await rejectAll(t, '4.11 read-only file system: extract, sweep', [
      { args: ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db], pattern: /cache\.sqlite/, strict: false, db },
      { args: ['sweep', '--db', db], pattern: /cache\.sqlite/, strict: false, db },
    ]);
    const outcome = readerOutcome(await runPipeline(cwd, ['cache', '--db', db]));
    figures.add({
      case: '4.11b read-only file system: cache (a reader)',
      tries: 1,
      result: (outcome.ok ? outcome.line : `${outcome.why}: ${outcome.line}`).split(cwd + '/').join(''),
      held: outcome.ok,
    });
    t.deepEqual(failed, []);
    t.true(outcome.ok, `${outcome.why}: ${outcome.line}`);
  });

  test.serial('4.12 full disk: one line, exit 1, committed rows kept, a rerun with space finishes', async (t) => {
    const mount = join(cwd, 'tiny');
    mkdirSync(mount, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount]);
    t.teardown(() => execFileSync('umount', [mount]));
    const db = join(mount, 'cache.sqlite');
    // An existing cache on the small disk: the 6 images of data/.
    const small = await runPipeline(cwd, ['extract', '--data', 'data', ...EXTRACT_FLAGS(modelJson), '--db', db]);
    t.is(small.code, 0, small.stderr);
    const before = readCache(db);
    // A bigger dataset, and a disk with ~24 KiB left.
    await makeDataset(join(cwd, 'more'), { classes: ['a', 'b', 'c'], perClass: 16, width: 48, height: 40, seed: 12000 });
    const filler = join(mount, 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (;;) writeSync(fd, Buffer.alloc(4096));
    } catch {
      /* ENOSPC: the disk is full */
    }
    closeSync(fd);
    execFileSync('truncate', ['-s', `-${24 * 1024}`, filler]);
    const full = await runPipeline(cwd, ['extract', '--data', 'more', ...EXTRACT_FLAGS(modelJson), '--db', db]);
    const outcome = judge(full, /full|space/i, false);
    const after = readCache(db);
    const kept = [...before.features].every(([hash, vector]) => after.features.get(hash)?.equals(vector));
    rmSync(filler);
    const rerun = await runPipeline(cwd, ['extract', '--data', 'more', ...EXTRACT_FLAGS(modelJson), '--db', db]);
    const end = readCache(db);
    const ok = outcome.ok && after.integrity === 'ok' && kept && rerun.code === 0 && end.integrity === 'ok' && end.features.size >= 48;
    figures.add({
      case: '4.12 full disk (1 MiB tmpfs, ~24 KiB free)',
      tries: 1,
      result: `${outcome.ok ? 'one line, exit 1' : `${outcome.why}`}: \`${outcome.line}\`; integrity ${after.integrity}, earlier rows ${kept ? 'kept' : 'LOST'}; rerun with space: exit ${rerun.code}, ${end.features.size} rows`,
      held: ok,
    });
    t.true(outcome.ok, `${outcome.why}: ${outcome.line}`);
    t.is(after.integrity, 'ok');
    t.true(kept, 'rows committed before the disk filled are kept');
    t.is(rerun.code, 0, rerun.stderr);
    t.is(end.integrity, 'ok');
  });
}

test.serial('4.13 a valid config file is accepted (the cases above fail for their fault only)', async (t) => {
  const config = join(cwd, 'good.yaml');
  writeFileSync(config, `model:\n  size: 64x64\nengine:\n  backend: wasm\n  batch: 4\n${SWEEP_YAML}`);
  const r = await runPipeline(cwd, ['cache', '--config', config, '--db', CACHE]);
  t.is(r.code, 0, r.stderr);
});
