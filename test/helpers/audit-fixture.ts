/**
 * A TrashNet subset with known problems, for measuring the audit: real photos from
 * ../shared, plus copies made with sharp (re-encoded, resized, cropped, brightness-shifted,
 * recoloured, resized and re-encoded) placed in another split or another class, and a few
 * photos moved to a wrong class. Split lists in TrashNet's format put each copy in a
 * different split from its original. Everything is deterministic (sorted names, fixed edits).
 */
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { byCodeUnit } from '../../data/dataset.js';

export const CLASSES = ['cardboard', 'glass', 'metal', 'paper', 'plastic', 'trash'] as const;

export type EditKind = 'reencode' | 'resize' | 'crop' | 'brightness' | 'recolour' | 'resize+reencode';
const EDITS: EditKind[] = ['reencode', 'resize', 'crop', 'brightness', 'recolour', 'resize+reencode'];

export interface PlantedCopy {
  readonly original: string;
  readonly copy: string;
  readonly edit: EditKind;
  readonly crossClass: boolean;
}

export interface PlantedDataset {
  readonly root: string;
  /** Dataset-relative paths. */
  readonly copies: PlantedCopy[];
  /** Photos moved to a wrong class: path in the fixture and the class it came from. */
  readonly moved: { path: string; trueLabel: string }[];
  readonly images: number;
}

export interface PlantOptions {
  /** TrashNet's folder (test/helpers/shared.ts TRASHNET_DIR). */
  readonly trashnet: string;
  /** Originals taken per class: the first by name after skipping `skip`. */
  readonly perClass?: number;
  readonly skip?: number;
  /** Originals per class that get a copy. */
  readonly copiesPerClass?: number;
  /** Originals per class moved to the next class. */
  readonly movedPerClass?: number;
}

const SPLIT_FILES = {
  train: 'one-indexed-files-notrash_train.txt',
  val: 'one-indexed-files-notrash_val.txt',
  test: 'one-indexed-files-notrash_test.txt',
} as const;
type Split = keyof typeof SPLIT_FILES;

async function officialSplits(trashnet: string): Promise<Map<string, Split>> {
  const splits = new Map<string, Split>();
  for (const [split, file] of Object.entries(SPLIT_FILES) as [Split, string][]) {
    const text = await readFile(join(trashnet, 'splits', file), 'utf8');
    for (const line of text.split('\n')) if (line.trim()) splits.set(line.trim().split(/\s+/)[0], split);
  }
  return splits;
}

/** The edited bytes of one copy; `n` varies the strength within the ranges the audit must catch. */
async function edit(bytes: Buffer, kind: EditKind, n: number): Promise<Buffer> {
  const image = sharp(bytes);
  const { width = 0, height = 0 } = await image.metadata();
  const scale = 0.5 + 0.06 * (n % 6); // 0.5 .. 0.8
  switch (kind) {
    case 'reencode':
      return image.jpeg({ quality: 30 + 10 * (n % 5) }).toBuffer();
    case 'resize':
      return image.resize(Math.round(width * scale), Math.round(height * scale)).jpeg({ quality: 90 }).toBuffer();
    case 'crop': {
      const cut = 0.05 + 0.01 * (n % 6); // 5% .. 10% of each side's length, off one corner's two edges
      const left = Math.round(width * cut * ((n % 2) ? 1 : 0.5));
      const top = Math.round(height * cut * ((n % 2) ? 0.5 : 1));
      return image
        .extract({ left, top, width: width - Math.round(width * cut), height: height - Math.round(height * cut) })
        .jpeg({ quality: 90 })
        .toBuffer();
    }
    case 'brightness':
      return image.modulate({ brightness: n % 2 ? 1.25 : 0.8 }).jpeg({ quality: 90 }).toBuffer();
    case 'recolour':
      return image.modulate({ hue: 20 + 5 * (n % 3), saturation: 1.3 }).jpeg({ quality: 90 }).toBuffer();
    case 'resize+reencode':
      return image.resize(Math.round(width * scale), Math.round(height * scale)).jpeg({ quality: 45 }).toBuffer();
  }
}

export async function plantDataset(root: string, options: PlantOptions): Promise<PlantedDataset> {
  const { trashnet, perClass = 50, skip = 0, copiesPerClass = 6, movedPerClass = 2 } = options;
  const official = await officialSplits(trashnet);
  const lists: Record<Split, string[]> = { train: [], val: [], test: [] };
  const copies: PlantedCopy[] = [];
  const moved: PlantedDataset['moved'] = [];
  let images = 0;
  for (const label of CLASSES) await mkdir(join(root, label), { recursive: true });
  let n = 0;
  for (const [c, label] of CLASSES.entries()) {
    const names = (await readdir(join(trashnet, label))).filter((f) => f.endsWith('.jpg')).sort(byCodeUnit).slice(skip, skip + perClass);
    for (const [i, name] of names.entries()) {
      const split = official.get(name) ?? 'train';
      const source = join(trashnet, label, name);
      const isMoved = i >= names.length - movedPerClass;
      const folder = isMoved ? CLASSES[(c + 1) % CLASSES.length] : label;
      await copyFile(source, join(root, folder, name));
      lists[split].push(name);
      images++;
      if (isMoved) {
        moved.push({ path: `${folder}/${name}`, trueLabel: label });
        continue;
      }
      if (i >= copiesPerClass) continue;
      const kind = EDITS[(c + i) % EDITS.length];
      const crossClass = i % 2 === 1;
      const copyFolder = crossClass ? CLASSES[(c + 2) % CLASSES.length] : label;
      const copyName = `${label}${9000 + i}.jpg`;
      await writeFile(join(root, copyFolder, copyName), await edit(await readFile(source), kind, n++));
      const copySplit: Split = split === 'train' ? (i % 3 === 0 ? 'val' : 'test') : 'train';
      lists[copySplit].push(copyName);
      images++;
      copies.push({ original: `${label}/${name}`, copy: `${copyFolder}/${copyName}`, edit: kind, crossClass });
    }
  }
  await mkdir(join(root, 'splits'), { recursive: true });
  for (const [split, file] of Object.entries(SPLIT_FILES) as [Split, string][]) {
    await writeFile(join(root, 'splits', file), lists[split].map((name) => `${name} 1\n`).join(''));
  }
  return { root, copies, moved, images };
}
