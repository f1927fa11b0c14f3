/**
 * A dataset is a folder with one subfolder per class. Classes are the subfolders that
 * hold at least one image (searched recursively, symlinks followed once); their order is
 * alphabetical, as in Keras' image_dataset_from_directory, and so is every file list.
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, extname, join, relative, sep } from 'node:path';
import { UserError } from '../core/errors.js';
import { IMAGE_EXTENSIONS } from './images.js';

export type Split = 'train' | 'val' | 'test';

export interface DatasetItem {
  /** Path relative to the dataset root, with '/' separators. */
  readonly path: string;
  /** What to open: a Buffer when the file name is not valid UTF-8 (`path` then shows it escaped). */
  readonly absolutePath: string | Buffer;
  readonly label: string;
  /** From the official split lists when the dataset has them. */
  readonly split: Split | null;
}

export interface Dataset {
  readonly root: string;
  readonly classes: readonly string[];
  readonly items: readonly DatasetItem[];
  /** Files that are not images, hidden entries, unreadable entries (e.g. symlink loops). */
  readonly skipped: { hidden: number; nonImage: number; unreadable: number };
  /** Where split lists were found, if anywhere. */
  readonly splitsFrom: string | null;
}

/** TrashNet's official split lists ("glass12.jpg 1" per line; despite the name they include trash). */
const SPLIT_FILES: Record<Split, string> = {
  train: 'one-indexed-files-notrash_train.txt',
  val: 'one-indexed-files-notrash_val.txt',
  test: 'one-indexed-files-notrash_test.txt',
};

/** Sorts by UTF-16 code units, the same on every machine and locale. */
export const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export async function scanDataset(root: string, splitsDir?: string): Promise<Dataset> {
  let rootStat;
  try {
    rootStat = await stat(root);
  } catch {
    throw new UserError(`dataset folder not found: ${root} (--data / dataset.root)`);
  }
  if (!rootStat.isDirectory()) throw new UserError(`dataset path is not a folder: ${root} (--data / dataset.root)`);

  const skipped = { hidden: 0, nonImage: 0, unreadable: 0 };
  const seen = new Set<string>([await realpath(root)]);
  const entries = (await readdir(root, { withFileTypes: true })).sort((a, b) => byCodeUnit(a.name, b.name));
  const classes: string[] = [];
  const files: { label: string; image: FoundImage }[] = [];
  for (const entry of entries) {
    const path = join(root, entry.name);
    if (entry.name.startsWith('.')) {
      skipped.hidden++;
      continue;
    }
    const kind = await kindOf(path);
    if (kind === 'file') {
      // Loose files at the top (README, a zip) belong to no class.
      skipped.nonImage++;
      continue;
    }
    if (kind !== 'dir' || entry.name === 'splits') {
      if (kind === 'broken') skipped.unreadable++;
      continue;
    }
    const images = await imagesUnder(path, seen, skipped);
    if (images.length === 0) continue; // a subfolder without images is not a class
    classes.push(entry.name);
    for (const image of images) files.push({ label: entry.name, image });
  }
  if (files.length === 0) throw new UserError(`dataset ${root} has no images in class subfolders (expected ${root}/<class>/<image>)`);

  const splitSource = await findSplitLists(root, splitsDir);
  const splitOf = splitSource ? await readSplitLists(splitSource) : new Map<string, Split>();
  const items = files.map(({ label, image }) => ({
    path: relative(root, image.display).split(sep).join('/'),
    absolutePath: image.open,
    label,
    split: splitOf.get(basename(image.display)) ?? null,
  }));
  return { root, classes, items, skipped, splitsFrom: splitSource };
}

async function kindOf(path: string | Buffer): Promise<'file' | 'dir' | 'other' | 'broken'> {
  try {
    const info = await stat(path); // follows symlinks; a loop fails with ELOOP
    return info.isFile() ? 'file' : info.isDirectory() ? 'dir' : 'other';
  } catch {
    return 'broken';
  }
}

/** A file found by the scan: its display path, and the path to open (a Buffer when the name is not UTF-8). */
interface FoundImage {
  readonly display: string;
  readonly open: string | Buffer;
}

async function imagesUnder(folder: string, seen: Set<string>, skipped: Dataset['skipped']): Promise<FoundImage[]> {
  const real = await realpath(folder).catch(() => undefined);
  if (real === undefined || seen.has(real)) {
    skipped.unreadable++;
    return [];
  }
  seen.add(real);
  const images: FoundImage[] = [];
  // Names as bytes: Linux allows names that are not UTF-8, and a decoded name could not be opened.
  const entries = (await readdir(folder, { withFileTypes: true, encoding: 'buffer' }))
    .map((entry) => ({ entry, ...decodeName(entry.name) }))
    .sort((a, b) => byCodeUnit(a.name, b.name));
  for (const { entry, name, utf8 } of entries) {
    const display = join(folder, name);
    const open = utf8 ? display : Buffer.concat([Buffer.from(folder + sep), entry.name]);
    if (name.startsWith('.')) {
      skipped.hidden++;
      continue;
    }
    const kind = await kindOf(open);
    if (kind === 'dir' && utf8) images.push(...(await imagesUnder(display, seen, skipped)));
    else if (kind === 'file' && (IMAGE_EXTENSIONS as readonly string[]).includes(extname(name).toLowerCase())) images.push({ display, open });
    else if (kind === 'broken' || kind === 'dir') skipped.unreadable++;
    else skipped.nonImage++;
  }
  return images;
}

/** The name as text; in a name that is not valid UTF-8, every byte outside printable ASCII is written \xNN. */
function decodeName(bytes: Buffer): { name: string; utf8: boolean } {
  const text = bytes.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(bytes)) return { name: text, utf8: true };
  const escaped = [...bytes].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`));
  return { name: escaped.join(''), utf8: false };
}

async function findSplitLists(root: string, splitsDir?: string): Promise<string | null> {
  if (splitsDir) {
    if (!Object.values(SPLIT_FILES).every((name) => existsSync(join(splitsDir, name)))) {
      throw new UserError(`--splits ${splitsDir} does not hold ${Object.values(SPLIT_FILES).join(', ')}`);
    }
    return splitsDir;
  }
  for (const candidate of [root, join(root, 'splits')]) {
    if (Object.values(SPLIT_FILES).every((name) => existsSync(join(candidate, name)))) return candidate;
  }
  return null;
}

async function readSplitLists(folder: string): Promise<Map<string, Split>> {
  const splitOf = new Map<string, Split>();
  for (const [split, name] of Object.entries(SPLIT_FILES) as [Split, string][]) {
    const text = await readFile(join(folder, name), 'utf8');
    for (const line of text.split('\n')) {
      const file = line.trim().split(/\s+/)[0];
      if (file) splitOf.set(file, split);
    }
  }
  return splitOf;
}
