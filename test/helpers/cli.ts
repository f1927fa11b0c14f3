/**
 * Running the real `pipeline` binary from tests (optionally SIGKILLed at a chosen moment),
 * and the one-line error contract every failure must keep.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { PIPELINE_BIN, TRASHNET_DIR } from './shared.js';

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit. */
  readonly ms: number;
  /** True when our SIGKILL reached a process that was still running. */
  readonly killed: boolean;
  /** When `killAfterCondition.check()` first returned true (ms since spawn). */
  readonly anchorMs?: number;
}

export interface RunOptions {
  /** Send SIGKILL after this many milliseconds (if the process is still running). */
  readonly killAfterMs?: number;
  /** Send SIGKILL `delayMs` after `check()` first returns true (polled every 10 ms). */
  readonly killAfterCondition?: { readonly check: () => boolean; readonly delayMs: number };
  readonly env?: Record<string, string>;
  /** Called with the process id once spawned (to tell the process in the store's worker ids, or to signal it). */
  readonly onSpawn?: (pid: number) => void;
}

/** Runs `node bin/pipeline.js ...args` in `cwd`; its model cache stays inside `cwd`. */
export function runPipeline(cwd: string, args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((done, fail) => {
    const started = performance.now();
    const child = spawn(process.execPath, [PIPELINE_BIN, ...args], {
      cwd,
      env: { ...process.env, PIPELINE_CACHE_DIR: join(cwd, '.model-cache'), NO_COLOR: '1', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid !== undefined) options.onSpawn?.(child.pid);
    let stdout = '';
    let stderr = '';
    let exited = false;
    let killed = false;
    let anchorMs: number | undefined;
    let anchorTimer: NodeJS.Timeout | undefined;
    const kill = () => {
      if (!exited) killed = child.kill('SIGKILL');
    };
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = options.killAfterMs === undefined ? undefined : setTimeout(kill, options.killAfterMs);
    const condition = options.killAfterCondition;
    const poll = condition
      ? setInterval(() => {
          if (exited || !condition.check()) return;
          clearInterval(poll);
          anchorMs = performance.now() - started;
          anchorTimer = setTimeout(kill, condition.delayMs);
        }, 10)
      : undefined;
    child.on('exit', () => (exited = true));
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(anchorTimer);
      clearInterval(poll);
      done({ code, signal, stdout, stderr, ms: performance.now() - started, killed: killed && signal === 'SIGKILL', anchorMs });
    });
  });
}

/** The lines of stderr that are errors (`pipeline: ...`), as opposed to progress and log lines. */
export const errorLines = (r: CliResult) => r.stderr.split('\n').filter((l) => l.startsWith('pipeline: '));

/**
 * The error contract: exit 1, exactly one `pipeline: ` line on stderr, it is the last line,
 * no stack trace, no "unexpected error". Returns the line. With `strict`, stderr must be
 * that one line and nothing else (commands that fail before doing any work).
 */
export function expectOneLineError(t: ExecutionContext, r: CliResult, what: string, strict = false): string {
  const lines = r.stderr.trimEnd().split('\n');
  const errors = errorLines(r);
  t.is(r.code, 1, `${what}: exit code 1 (stderr: ${r.stderr})`);
  t.is(errors.length, 1, `${what}: exactly one 'pipeline: ' line: ${JSON.stringify(r.stderr)}`);
  t.is(lines[lines.length - 1], errors[0], `${what}: the error is the last stderr line`);
  t.false(/^\s+at /m.test(r.stderr), `${what}: no stack trace: ${JSON.stringify(r.stderr)}`);
  t.false(r.stderr.includes('unexpected error'), `${what}: not an unexpected error: ${errors[0]}`);
  if (strict) t.is(lines.length, 1, `${what}: stderr is one line: ${JSON.stringify(r.stderr)}`);
  return errors[0] ?? '';
}


export const TRASHNET_CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash'] as const;

/** The first `perClass` TrashNet photos of each class, linked into `dir`, with the official split lists. */
export async function trashnetSlice(dir: string, perClass: number): Promise<string> {
  for (const label of TRASHNET_CLASSES) {
    await mkdir(join(dir, label), { recursive: true });
    const files = (await readdir(join(TRASHNET_DIR, label))).filter((f) => f.endsWith('.jpg')).sort().slice(0, perClass);
    for (const file of files) await symlink(join(TRASHNET_DIR, label, file), join(dir, label, file));
  }
  await mkdir(join(dir, 'splits'));
  for (const split of ['train', 'val', 'test']) {
    const name = `one-indexed-files-notrash_${split}.txt`;
    await copyFile(join(TRASHNET_DIR, 'splits', name), join(dir, 'splits', name));
  }
  return dir;
}
