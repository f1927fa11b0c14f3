/**
 * Small generated images and dataset folders for tests. Pixel content is a deterministic
 * function of a seed (smooth colour waves on a per-class tint, so JPEG keeps them stable),
 * and bad files (corrupt, zero-byte, text-as-.jpg) are made on request.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { rng } from './random-model.js';

export type Format = 'jpeg' | 'png';

/** width*height*3 bytes of RGB: a tint from `tint` plus seeded low-frequency waves. */
export function pixels(width: number, height: number, seed: number, tint: readonly [number, number, number] = [128, 128, 128]): Buffer {
  const random = rng(seed);
  const waves = Array.from({ length: 3 }, () => ({
    fx: 0.05 + random() * 0.3,
    fy: 0.05 + random() * 0.3,
    phase: random() * Math.PI * 2,
    amplitude: 30 + random() * 60,
  }));
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        const w = waves[c];
        const v = tint[c] + w.amplitude * Math.sin(x * w.fx + y * w.fy + w.phase);
        data[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return data;
}

/** Encodes raw RGB pixels. */
export function encode(data: Buffer, width: number, height: number, format: Format = 'jpeg'): Promise<Buffer> {
  const image = sharp(data, { raw: { width, height, channels: 3 } });
  return format === 'jpeg' ? image.jpeg({ quality: 92 }).toBuffer() : image.png().toBuffer();
}

/** Writes one generated image; returns its bytes. */
export async function writeImage(
  path: string,
  options: { width?: number; height?: number; seed?: number; format?: Format; tint?: readonly [number, number, number] } = {},
): Promise<Buffer> {
  const { width = 40, height = 30, seed = 1, format = 'jpeg', tint } = options;
  const bytes = await encode(pixels(width, height, seed, tint), width, height, format);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
  return bytes;
}

/** A class's tint, so classes differ in colour as well as in texture. */
export function classTint(index: number): [number, number, number] {
  const tints: [number, number, number][] = [
    [200, 80, 80],
    [80, 200, 80],
    [80, 80, 200],
    [200, 200, 80],
    [80, 200, 200],
    [200, 80, 200],
  ];
  return tints[index % tints.length];
}

export interface DatasetOptions {
  readonly classes?: readonly string[];
  readonly perClass?: number;
  readonly width?: number;
  readonly height?: number;
  readonly seed?: number;
  /** Add `<first class>/corrupt.jpg`: a JPEG cut in half. */
  readonly corrupt?: boolean;
  /** Add `<first class>/empty.jpg`: zero bytes. */
  readonly zeroByte?: boolean;
  /** Add `<last class>/notes.jpg`: text with an image extension. */
  readonly textAsJpeg?: boolean;
}

export interface GeneratedDataset {
  readonly root: string;
  readonly classes: readonly string[];
  /** Good images, relative paths ('/' separated), sorted. */
  readonly images: readonly string[];
  /** Bad files, relative paths, sorted. */
  readonly bad: readonly string[];
}

/** Writes `root/<class>/<class>_<i>.jpg` images (distinct contents) and any bad files asked for. */
export async function makeDataset(root: string, options: DatasetOptions = {}): Promise<GeneratedDataset> {
  const { classes = ['alpha', 'bravo', 'charlie'], perClass = 4, width = 40, height = 30, seed = 1000 } = options;
  const images: string[] = [];
  const bad: string[] = [];
  for (const [c, label] of classes.entries()) {
    for (let i = 0; i < perClass; i++) {
      const rel = `${label}/${label}_${i}.jpg`;
      await writeImage(join(root, rel), { width, height, seed: seed + c * 100 + i, tint: classTint(c) });
      images.push(rel);
    }
  }
  if (options.corrupt) {
    const good = await encode(pixels(width, height, seed + 9999), width, height, 'jpeg');
    const rel = `${classes[0]}/corrupt.jpg`;
    await writeFile(join(root, rel), good.subarray(0, Math.floor(good.length / 2)));
    bad.push(rel);
  }
  if (options.zeroByte) {
    const rel = `${classes[0]}/empty.jpg`;
    await writeFile(join(root, rel), Buffer.alloc(0));
    bad.push(rel);
  }
  if (options.textAsJpeg) {
    const rel = `${classes[classes.length - 1]}/notes.jpg`;
    await writeFile(join(root, rel), 'this is not a picture\n');
    bad.push(rel);
  }
  return { root, classes: [...classes].sort(), images: images.sort(), bad: bad.sort() };
}
