/**
 * Where things are, for tests: the repository root, ../shared (real weights and TrashNet,
 * present on every developer machine and in CI), and temp folders that clean themselves.
 *
 * PIPELINE_SHARED_DIR=DIR looks for the shared folder at DIR instead of ../shared;
 * `PIPELINE_SHARED_DIR=/nonexistent npm test` runs the suite as a machine without it would
 * (every test that needs it is then reported as skipped).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext, type ImplementationFn } from 'ava';

/** The checkout: the nearest folder above this file whose package.json is `pipeline` (works from test/ and dist/test/). */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'pipeline') return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the pipeline repository root above the test files');
    dir = parent;
  }
}

export const REPO_ROOT = findRepoRoot();
export const SHARED_DIR = resolve(process.env.PIPELINE_SHARED_DIR ?? join(REPO_ROOT, '..', 'shared'));
export const SHARED_PRESENT = existsSync(join(SHARED_DIR, 'models')) && existsSync(join(SHARED_DIR, 'datasets'));
export const SHARED_MODEL_100 = join(SHARED_DIR, 'models', 'mobilenet_v2_1.00_224_no_top', 'model.json');
export const SHARED_MODEL_035 = join(SHARED_DIR, 'models', 'mobilenet_v2_0.35_224_no_top', 'model.json');
export const TRASHNET_DIR = join(SHARED_DIR, 'datasets', 'trashnet');
/** The CLI entry point (runs dist/pipeline/main.js, so `tsc` must have run). */
export const PIPELINE_BIN = join(REPO_ROOT, 'bin', 'pipeline.js');

/** The title suffix of a test that cannot run without ../shared. */
const NEEDS_SHARED = `(needs ../shared: ${SHARED_DIR} not found)`;

/** Registers a test that needs ../shared; without it, ava reports the test as skipped, with the reason in its title. */
export function testWithShared(title: string, fn: ImplementationFn<[]>): void {
  if (SHARED_PRESENT) test(title, fn);
  else test.skip(`${title} ${NEEDS_SHARED}`, fn);
}

/** Same as testWithShared, for tests that must run one at a time. */
export function serialTestWithShared(title: string, fn: ImplementationFn<[]>): void {
  if (SHARED_PRESENT) test.serial(title, fn);
  else test.serial.skip(`${title} ${NEEDS_SHARED}`, fn);
}

/** A fresh temp folder, removed when the test ends (pass or fail). */
export function tempDir(t: ExecutionContext, prefix = 'pipeline-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A temp folder for a whole file, removed by `remove` (call it from test.after.always), and
 * in any case when the worker process exits (e.g. when --match selects none of the file's tests).
 */
export function fileTempDir(prefix = 'pipeline-test-'): { dir: string; remove: () => Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}
