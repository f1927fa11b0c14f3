/**
 * What turns a file into the backbone's input. Everything here changes the features,
 * so all of it goes into the feature set's identity (stages/extract.ts).
 */

/** MobileNetV2's ImageNet training scaled 8-bit RGB to [-1, 1]: x / 127.5 - 1. */
export const PREPROCESSING = {
  // Decoded once at full resolution, or JPEG shrink-on-load keeping the shorter side
  // >= 1.25x the input's longer side (data/images.ts jpegShrink).
  id: 'srgb8-exif-noalpha-shrink1.25/x/127.5-1',
  scale: 127.5,
  offset: 1,
} as const;

/**
 * How an image is brought to the input size:
 * - fill: stretch to exactly H x W, ignoring aspect ratio (what Keras'
 *   image_dataset_from_directory does by default; TrashNet's 512x384 photos are
 *   untouched at 384x512);
 * - cover: scale to cover H x W, then crop the centre (keeps aspect ratio).
 */
export const RESIZE_MODES = ['fill', 'cover'] as const;
export type ResizeMode = (typeof RESIZE_MODES)[number];

export interface InputSize {
  readonly height: number;
  readonly width: number;
}

/** Parses `HxW` ("384x512"); returns undefined when malformed. */
export function parseSize(text: string): InputSize | undefined {
  const match = /^(\d+)x(\d+)$/i.exec(text.trim());
  if (!match) return undefined;
  const height = Number(match[1]);
  const width = Number(match[2]);
  // Five stride-2 stages: anything below 32 px leaves nothing to pool.
  if (height < 32 || width < 32 || height > 4096 || width > 4096) return undefined;
  return { height, width };
}

export const formatSize = (size: InputSize) => `${size.height}x${size.width}`;
