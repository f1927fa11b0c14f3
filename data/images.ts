/**
 * File bytes -> the backbone's input pixels, with sharp (libvips): EXIF orientation
 * applied, alpha dropped, any colour space or bit depth converted to 8-bit sRGB RGB,
 * decoded once (decodeSource), then each view resized to the input size (renderInput). The [-1, 1] scaling happens on the engine (it is one op there).
 */
import sharp from 'sharp';
import type { InputSize, ResizeMode } from '../backbone/preprocessing.js';
import { ORIGINAL, type RawImage, type View, applyView } from './views.js';

// libvips runs each image on its own threads; with several images decoding at once
// (p-limit in the extract stage) extra threads only fight the backbone for 2 cores.
sharp.concurrency(1);
sharp.cache(false);

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif'] as const;

const OPEN = { failOn: 'truncated', sequentialRead: true } as const;

/**
 * Decodes one image to `height * width * 3` bytes of RGB: decodeSource, then
 * renderInput of the original view. Throws (sharp's message) for anything that is not a
 * complete, decodable image, and for images over sharp's pixel limit (268 megapixels),
 * which it refuses before allocating them.
 */
export async function decodeImage(bytes: Uint8Array, size: InputSize, resize: ResizeMode): Promise<Buffer> {
  const { sources } = await decodeSources(bytes, [size]);
  return renderInput(sources[0], ORIGINAL, size, resize);
}

/**
 * How much larger than the input's longer side a JPEG's shorter side stays after
 * shrink-on-load (libjpeg decodes at 1/2, 1/4 or 1/8 for a fraction of the work). Keeping
 * the shorter side above the longer input side serves every rotation from one decode;
 * the 25% margin serves crops down to 0.8 of the image without upsampling. The factor
 * depends on the image and the input size only, never on which other sizes or views are
 * extracted with it, so a feature set's numbers are the same either way.
 */
const SHRINK_MARGIN = 1.25;

/** The JPEG shrink-on-load factor for an image of `width x height` going to `size` (1 = none). */
export function jpegShrink(width: number, height: number, size: InputSize): 1 | 2 | 4 | 8 {
  const keep = Math.ceil(SHRINK_MARGIN * Math.max(size.height, size.width));
  for (const factor of [8, 4, 2] as const) if (Math.min(width, height) / factor >= keep) return factor;
  return 1;
}

/**
 * The decode of an image for every view made from it at each of `sizes`: 8-bit sRGB RGB,
 * EXIF orientation applied, alpha dropped, at full resolution, or for a plain JPEG that
 * is large for a size, shrunk on load (jpegShrink). Sizes with the same factor share one
 * decode (all sizes up to 512 px a side do); `decodes` says how many there were.
 *
 * libvips orders a pipeline's operations itself (it would resize before applying the
 * EXIF orientation, and with alpha premultiplied), which is one more reason the resize
 * happens in renderInput, on pixels that are already upright and opaque.
 */
export async function decodeSources(bytes: Uint8Array, sizes: readonly InputSize[]): Promise<{ sources: RawImage[]; decodes: number }> {
  if (bytes.length === 0) throw new Error('empty file');
  try {
    return await shared(() => decodeSourcesOnce(bytes, sizes));
  } catch {
    // libvips keeps one error buffer for all its threads: when another image fails or
    // finishes at the same moment, the reason can be lost ("Unknown error") or be the
    // other image's. Failures are rare, so each is decoded again with nothing else
    // running, and that attempt's outcome (its reason, or rarely its pixels) stands.
    return await alone(() => decodeSourcesOnce(bytes, sizes));
  }
}

/** sharp calls in flight, and the one that must run with none beside it (see decodeSources). */
let active = 0;
let exclusive: Promise<void> | undefined;
let drained: (() => void) | undefined;

async function shared<T>(work: () => Promise<T>): Promise<T> {
  while (exclusive) await exclusive;
  active++;
  try {
    return await work();
  } finally {
    if (--active === 0) drained?.();
  }
}

async function alone<T>(work: () => Promise<T>): Promise<T> {
  while (exclusive) await exclusive;
  let release!: () => void;
  exclusive = new Promise((resolve) => (release = resolve));
  try {
    while (active > 0) await new Promise<void>((resolve) => (drained = resolve));
    return await work();
  } finally {
    drained = undefined;
    exclusive = undefined;
    release();
  }
}

async function decodeSourcesOnce(bytes: Uint8Array, sizes: readonly InputSize[]): Promise<{ sources: RawImage[]; decodes: number }> {
  const { format, width = 0, height = 0, orientation = 1, hasAlpha = false } = await sharp(bytes, OPEN).metadata();
  const plainJpeg = format === 'jpeg' && orientation === 1 && !hasAlpha;
  const factors = sizes.map((size) => (plainJpeg ? jpegShrink(width, height, size) : 1));
  const decoded = new Map<number, RawImage>();
  for (const factor of new Set(factors)) {
    // An exact fraction of the size makes sharp take libjpeg's shrink-on-load for it.
    const pipeline =
      factor > 1 ? sharp(bytes, OPEN).resize(Math.floor(width / factor), Math.floor(height / factor), { fit: 'fill' }) : sharp(bytes, OPEN).autoOrient();
    const { data, info } = await pipeline.toColourspace('srgb').removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    decoded.set(factor, { data, width: info.width, height: info.height });
  }
  return { sources: factors.map((factor) => decoded.get(factor)!), decodes: decoded.size };
}

/** One view of a decoded image at the input size (view first, then resize: see data/views.ts). */
export function renderInput(source: RawImage, view: View, size: InputSize, resize: ResizeMode): Promise<Buffer> {
  return shared(() => renderInputNow(source, view, size, resize));
}

async function renderInputNow(source: RawImage, view: View, size: InputSize, resize: ResizeMode): Promise<Buffer> {
  const image = applyView(source, view);
  const { data, info } = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(size.width, size.height, { fit: resize === 'fill' ? 'fill' : 'cover', position: 'centre' })
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== size.width * size.height * 3) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${size.width}x${size.height}x3`);
  }
  return data;
}
