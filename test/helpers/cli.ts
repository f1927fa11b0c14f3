/** Running the real `pipeline` binary from tests, and checking what a user would see. */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { PIPELINE_BIN, TRASHNET_DIR } from './shared.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in `cwd` with its model cache inside `cwd`: never touches the user's cache at home. */
export function runPipeline(cwd: string, args: string[]): Promise<CliResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [PIPELINE_BIN, ...args], {
      cwd,
      env: { ...process.env, PIPELINE_CACHE_DIR: join(cwd, '.model-cache'), NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** Exit 1 and exactly one line on stderr, `pipeline: ...`; returns the line. */
export function oneLineError(t: ExecutionContext, result: CliResult, what: string): string {
  t.is(result.code, 1, `${what}: exit code (stderr: ${result.stderr})`);
  const lines = result.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, `${what}: stderr has one line: ${JSON.stringify(result.stderr)}`);
  t.true(lines[0].startsWith('pipeline: '), `${what}: ${lines[0]}`);
  return lines[0];
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
