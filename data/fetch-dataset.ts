/**
 * When the dataset folder is missing and a URL is configured: download the zip (progress,
 * optional sha256 check, temp file then rename) and unpack it with yauzl into a temporary
 * folder that is renamed into place only when complete.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { UserError, messageOf } from '../core/errors.js';
import { type Log, type Progress, type StartProgress, noProgress } from '../core/log.js';
import { download } from './download.js';

export interface DatasetSource {
  readonly root: string;
  readonly url: string | null;
  readonly sha256: string | null;
}

export async function ensureDataset(source: DatasetSource, log: Log, startProgress: StartProgress = noProgress): Promise<void> {
  if (existsSync(source.root) || !source.url) return;
  const zipPath = `${source.root}.zip`;
  if (!existsSync(zipPath)) {
    log(`dataset ${source.root} not found: downloading ${source.url}`);
    let progress: Progress | undefined;
    let reported = 0;
    const digest = await download(source.url, zipPath, {
      sha256: source.sha256 ?? undefined,
      what: 'dataset',
      onProgress(received, total) {
        progress ??= startProgress('download', total ?? 0, 'bytes');
        progress.advance(received - reported);
        reported = received;
      },
    });
    progress?.stop();
    log(`downloaded ${zipPath} (sha256 ${digest}${source.sha256 ? ', verified' : '; set dataset.sha256 to pin it'})`);
  }
  await unpack(zipPath, source.root);
  log(`unpacked into ${source.root}`);
}

/** Unpacks into `${target}.partial`, then renames; a single top-level folder in the zip is lifted. */
async function unpack(zipPath: string, target: string): Promise<void> {
  const staging = `${target}.partial-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  try {
    await extractZip(zipPath, staging);
    const top = (await readdir(staging, { withFileTypes: true })).filter((e) => !e.name.startsWith('__MACOSX'));
    const lifted = top.length === 1 && top[0].isDirectory() ? join(staging, top[0].name) : staging;
    await mkdir(dirname(target), { recursive: true });
    await rename(lifted, target);
  } catch (error) {
    // A zip that cannot be unpacked (an HTML error page, say) must not be reused next run.
    await rm(zipPath, { force: true });
    throw new UserError(`cannot unpack ${zipPath}: ${messageOf(error)}`);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

function extractZip(zipPath: string, into: string): Promise<void> {
  const root = resolve(into);
  return new Promise((done, fail) => {
    yauzl.open(zipPath, { lazyEntries: true, strictFileNames: false }, (openError, zip) => {
      if (openError || !zip) return fail(openError ?? new Error('unreadable zip'));
      zip.on('error', fail);
      zip.on('end', () => done());
      zip.on('entry', (entry: yauzl.Entry) => {
        const destination = resolve(root, entry.fileName);
        // yauzl validates names, but never write outside the target folder.
        if (destination !== root && !destination.startsWith(root + sep)) return fail(new Error(`unsafe path ${entry.fileName}`));
        if (entry.fileName.endsWith('/')) {
          mkdir(destination, { recursive: true }).then(() => zip.readEntry(), fail);
          return;
        }
        zip.openReadStream(entry, (streamError, stream) => {
          if (streamError || !stream) return fail(streamError ?? new Error(`cannot read ${entry.fileName}`));
          mkdir(dirname(destination), { recursive: true })
            .then(() => pipeline(stream, createWriteStream(destination)))
            .then(() => zip.readEntry(), fail);
        });
      });
      zip.readEntry();
    });
  });
}
