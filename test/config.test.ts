import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { DEFAULT_DATASET_URL, DEFAULT_MODEL_URL, loadConfig } from '../pipeline/config.js';
import { UserError } from '../core/errors.js';
import { tempDir } from './helpers/shared.js';

/** Writes a config file into a fresh temp folder; returns its absolute path. */
function configFile(t: ExecutionContext, text: string, name = 'config.yaml'): string {
  const dir = tempDir(t, 'pipeline-config-');
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** loadConfig must throw a UserError; returns its message. */
function failure(t: ExecutionContext, run: () => unknown): string {
  const error = t.throws(run, { instanceOf: UserError });
  t.false(error!.message.includes('\n'), `one line: ${error!.message}`);
  return error!.message;
}

/** Runs `fn` with the working directory set to `dir` (synchronously, so no other test sees it). */
function inDir<T>(dir: string, fn: () => T): T {
  const previous = process.cwd();
  process.chdir(dir);
  try {
    return fn();
  } finally {
    process.chdir(previous);
  }
}

test('defaults without a config file', (t) => {
  const dir = tempDir(t);
  const config = inDir(dir, () => loadConfig(undefined));
  t.is(config.file, null);
  t.deepEqual(config.dataset, {
    root: join(dir, 'data', 'trashnet'),
    url: DEFAULT_DATASET_URL,
    sha256: null,
    splits: null,
    fetch: { timeoutMs: 20_000, retries: 3 },
  });
  t.deepEqual(config.model, { weights: DEFAULT_MODEL_URL, size: { height: 384, width: 512 }, sizes: [{ height: 384, width: 512 }], resize: 'fill', views: ['original'] });
  t.deepEqual(config.cache, { db: join(dir, 'runs', 'pipeline.sqlite') });
  t.deepEqual(config.engine, { backend: 'auto', batch: 8, concurrency: 4 });
  t.is(config.sweep.method, 'grid');
});

test('./config.yaml is used when no --config is given', (t) => {
  const file = configFile(t, 'engine:\n  batch: 3\n');
  const config = inDir(resolve(file, '..'), () => loadConfig(undefined));
  t.is(config.file, file);
  t.is(config.engine.batch, 3);
});

test('the file overrides the defaults, the flags override the file', (t) => {
  const file = configFile(
    t,
    [
      'dataset:',
      '  root: /data/set',
      '  sha256: ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789',
      'model:',
      '  weights: https://example.com/m/model.json',
      '  size: 224x224',
      '  resize: cover',
      'cache:',
      '  db: /var/cache.db',
      'engine:',
      '  backend: wasm',
      '  batch: 16',
      '  concurrency: 2',
      '',
    ].join('\n'),
  );
  const fromFile = loadConfig(file);
  t.is(fromFile.file, file);
  t.is(fromFile.dataset.root, '/data/set');
  t.is(fromFile.dataset.url, null, 'the default download URL belongs to the default root, not to a folder the user names');
  t.is(fromFile.dataset.sha256, 'abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789');
  t.deepEqual(fromFile.model, { weights: 'https://example.com/m/model.json', size: { height: 224, width: 224 }, sizes: [{ height: 224, width: 224 }], resize: 'cover', views: ['original'] });
  t.is(fromFile.cache.db, '/var/cache.db');
  t.deepEqual(fromFile.engine, { backend: 'wasm', batch: 16, concurrency: 2 });

  const flagged = loadConfig(file, {
    data: '/other/data',
    model: '/models/x/model.json',
    size: '96x128',
    resize: 'fill',
    db: '/tmp/x.db',
    backend: 'cpu',
    batch: 5,
    concurrency: 1,
    splits: '/lists',
  });
  t.is(flagged.dataset.root, '/other/data');
  t.is(flagged.dataset.splits, '/lists');
  t.deepEqual(flagged.model, { weights: '/models/x/model.json', size: { height: 96, width: 128 }, sizes: [{ height: 96, width: 128 }], resize: 'fill', views: ['original'] });
  t.is(flagged.cache.db, '/tmp/x.db');
  t.deepEqual(flagged.engine, { backend: 'cpu', batch: 5, concurrency: 1 });
});

test("relative paths in the file resolve against the file's folder; in flags, against the working directory", (t) => {
  const file = configFile(
    t,
    'dataset:\n  root: data/trash\n  splits: ../lists\nmodel:\n  weights: models/m/model.json\ncache:\n  db: runs/c.sqlite\n',
    'nested.yaml',
  );
  const folder = resolve(file, '..');
  const elsewhere = tempDir(t);
  const config = inDir(elsewhere, () => loadConfig(file));
  t.is(config.dataset.root, join(folder, 'data', 'trash'));
  t.is(config.dataset.splits, resolve(folder, '..', 'lists'));
  t.is(config.model.weights, join(folder, 'models', 'm', 'model.json'));
  t.is(config.cache.db, join(folder, 'runs', 'c.sqlite'));
  const flagged = inDir(elsewhere, () => loadConfig(file, { data: 'd', db: 'x/c.db', model: 'm.json', splits: 's' }));
  t.is(flagged.dataset.root, join(elsewhere, 'd'));
  t.is(flagged.cache.db, join(elsewhere, 'x', 'c.db'));
  t.is(flagged.model.weights, join(elsewhere, 'm.json'));
  t.is(flagged.dataset.splits, join(elsewhere, 's'));
  // A relative --config is relative to the working directory, and so is its folder.
  mkdirSync(join(elsewhere, 'conf'));
  writeFileSync(join(elsewhere, 'conf', 'c.yaml'), 'cache:\n  db: here.db\n');
  const relative = inDir(elsewhere, () => loadConfig('conf/c.yaml'));
  t.is(relative.cache.db, join(elsewhere, 'conf', 'here.db'));
});

test('URLs and absolute paths in the file are kept as they are', (t) => {
  const file = configFile(t, 'model:\n  weights: https://example.com/a/model.json\ncache:\n  db: /abs/c.db\n');
  const config = loadConfig(file);
  t.is(config.model.weights, 'https://example.com/a/model.json');
  t.is(config.cache.db, '/abs/c.db');
});

test('a file with only `sweep:` is valid, and an empty file is the defaults', (t) => {
  const file = configFile(t, 'sweep:\n  method: random\n  runs: 7\n  parameters:\n    dropout: {values: [0.1, 0.3]}\n');
  const config = loadConfig(file);
  t.is(config.sweep.method, 'random');
  t.is(config.sweep.runs, 7);
  t.deepEqual(config.sweep.parameters.dropout, { values: [0.1, 0.3] });
  t.is(config.engine.batch, 8);
  t.is(config.model.size.height, 384);
  const empty = loadConfig(configFile(t, ''));
  t.deepEqual(empty.engine, { backend: 'auto', batch: 8, concurrency: 4 });
});

test('malformed YAML: file:line:col', (t) => {
  const badIndent = configFile(t, 'model:\n  size: 224x224\n resize: fill\n');
  t.true(failure(t, () => loadConfig(badIndent)).startsWith(`${badIndent}:3:1: invalid YAML`));
  const tab = configFile(t, 'engine:\n\tbatch: 4\n');
  t.true(failure(t, () => loadConfig(tab)).startsWith(`${tab}:2:1: invalid YAML`));
  const duplicate = configFile(t, 'engine:\n  batch: 4\nengine:\n  batch: 5\n');
  t.regex(failure(t, () => loadConfig(duplicate)), new RegExp(`^${escape(duplicate)}:3:\\d+: invalid YAML`));
  const list = configFile(t, '- 1\n- 2\n');
  t.true(failure(t, () => loadConfig(list)).startsWith(list));
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('an unknown key: named, with its line', (t) => {
  const nested = configFile(t, 'model:\n  size: 224x224\n  colour: red\n');
  const message = failure(t, () => loadConfig(nested));
  t.true(message.startsWith(`${nested}:3:3: model.colour: unknown key`), message);
  t.regex(message, /weights, size, resize/);
  const top = configFile(t, 'engine:\n  batch: 2\nmodle:\n  size: 224x224\n');
  t.true(failure(t, () => loadConfig(top)).startsWith(`${top}:3:1: modle: unknown key`));
  const sweep = configFile(t, 'sweep:\n  parameters:\n    dropuot: {values: [0.1]}\n');
  t.true(failure(t, () => loadConfig(sweep)).startsWith(`${sweep}:3:5: sweep.parameters.dropuot: unknown key`));
});

test('a wrong type or out-of-range value: the field and its line', (t) => {
  const zero = configFile(t, 'engine:\n  backend: wasm\n  batch: 0\n');
  t.regex(failure(t, () => loadConfig(zero)), new RegExp(`^${escape(zero)}:3:\\d+: engine\\.batch: `));
  const huge = configFile(t, 'engine:\n  concurrency: 1000\n');
  t.regex(failure(t, () => loadConfig(huge)), new RegExp(`^${escape(huge)}:2:\\d+: engine\\.concurrency: `));
  const text = configFile(t, 'engine:\n  batch: eight\n');
  t.regex(failure(t, () => loadConfig(text)), new RegExp(`^${escape(text)}:2:\\d+: engine\\.batch: `));
  const size = configFile(t, 'dataset:\n  root: x\nmodel:\n  size: abc\n');
  t.regex(failure(t, () => loadConfig(size)), new RegExp(`^${escape(size)}:4:\\d+: model\\.size: .*HxW`));
  const tiny = configFile(t, 'model:\n  size: 16x16\n');
  t.regex(failure(t, () => loadConfig(tiny)), /:2:\d+: model\.size: /);
  const backend = configFile(t, 'engine:\n  backend: tpu\n');
  t.regex(failure(t, () => loadConfig(backend)), /:2:\d+: engine\.backend: /);
  const sha = configFile(t, 'dataset:\n  sha256: abcd\n');
  t.regex(failure(t, () => loadConfig(sha)), /:2:\d+: dataset\.sha256: expected 64 hex digits/);
  const sweep = configFile(t, 'sweep:\n  method: bogus\n');
  t.regex(failure(t, () => loadConfig(sweep)), /:2:\d+: sweep\.method: /);
});

test('bad --size, --backend and --resize flags: errors naming the flag', (t) => {
  const dir = tempDir(t);
  const load = (flags: Parameters<typeof loadConfig>[1]) => inDir(dir, () => loadConfig(undefined, flags));
  for (const size of ['0x0', 'abc', '224', '224x', '-224x224']) {
    t.true(failure(t, () => load({ size })).startsWith('--size'), size);
  }
  t.true(failure(t, () => load({ backend: 'nope' })).startsWith('--backend'));
  t.true(failure(t, () => load({ resize: 'crop' })).startsWith('--resize'));
  t.deepEqual(load({ size: '32X4096' }).model.size, { height: 32, width: 4096 });
});

test('a --config that does not exist: UserError naming it', (t) => {
  const missing = join(tempDir(t), 'nope.yaml');
  t.regex(failure(t, () => loadConfig(missing)), new RegExp(escape(missing)));
});

test('how manifest URLs are fetched: from the file, overridden by flags; a bad value names the field', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'fetch.yaml');
  writeFileSync(file, 'dataset:\n  root: list.csv\n  fetch_timeout: 2.5\n  fetch_retries: 0\n');
  const fromFile = loadConfig(file);
  t.is(fromFile.dataset.root, join(dir, 'list.csv'));
  t.deepEqual(fromFile.dataset.fetch, { timeoutMs: 2500, retries: 0 });
  t.deepEqual(loadConfig(file, { 'fetch-timeout': 7, 'fetch-retries': 5 }).dataset.fetch, { timeoutMs: 7000, retries: 5 });
  writeFileSync(file, 'dataset:\n  fetch_retries: -1\n');
  const error = t.throws(() => loadConfig(file));
  t.regex(error!.message, /fetch\.yaml:2:18: dataset\.fetch_retries: /);
});
