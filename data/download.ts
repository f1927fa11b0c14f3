import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { UserError, messageOf } from '../core/errors.js';

export interface DownloadOptions {
  /** Expected sha256 (hex); the file is refused when it differs. */
  readonly sha256?: string;
  /** Called as bytes arrive; total is undefined when the server sends no length. */
  readonly onProgress?: (received: number, total: number | undefined) => void;
  /** What is being downloaded, for error messages ("model weights", "dataset"). */
  readonly what?: string;
}

/**
 * Downloads `url` to `destination` through a temporary file in the same folder, renamed
 * only once complete and verified: an interrupted or corrupted download never leaves a
 * file where a complete one is expected. Returns the sha256 of what was written.
 */
export async function download(url: string, destination: string, options: DownloadOptions = {}): Promise<string> {
  const what = options.what ?? 'file';
  const partial = `${destination}.partial-${process.pid}`;
  let response: Response;
  try {
    response = await fetch(url, { redirect: 'follow' });
  } catch (error) {
    throw new UserError(`cannot download ${what} from ${url}: ${messageOf((error as Error).cause ?? error)}`);
  }
  if (!response.ok || !response.body) {
    throw new UserError(`cannot download ${what} from ${url}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  // Only now, with an answer on its way, does anything appear on disk.
  const createdFolder = await mkdir(dirname(destination), { recursive: true });
  await removeStalePartials(destination);
  const lengthHeader = response.headers.get('content-length');
  const total = lengthHeader ? Number(lengthHeader) : undefined;
  const hash = createHash('sha256');
  let received = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      received += chunk.length;
      options.onProgress?.(received, total);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(response.body as never), meter, createWriteStream(partial));
    if (total !== undefined && received !== total) {
      throw new Error(`connection closed after ${received} of ${total} bytes`);
    }
    const digest = hash.digest('hex');
    if (options.sha256 && digest !== options.sha256.toLowerCase()) {
      throw new Error(`sha256 mismatch: expected ${options.sha256}, got ${digest}`);
    }
    await rename(partial, destination);
    return digest;
  } catch (error) {
    await rm(partial, { force: true });
    if (createdFolder) await rmdir(createdFolder).catch(() => {}); // only if still empty
    if (error instanceof UserError) throw error;
    throw new UserError(`cannot download ${what} from ${url}: ${messageOf(error)}`);
  }
}

/** Temporary files of earlier downloads of `destination` whose process is gone (killed mid-way). */
async function removeStalePartials(destination: string): Promise<void> {
  const prefix = `${basename(destination)}.partial-`;
  for (const name of await readdir(dirname(destination))) {
    const pid = Number(name.slice(prefix.length));
    if (name.startsWith(prefix) && Number.isInteger(pid) && !processAlive(pid)) await rm(join(dirname(destination), name), { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
