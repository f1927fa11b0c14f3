/**
 * File bytes -> the backbone's input pixels, with sharp (libvips): EXIF orientation
 * applied, alpha dropped, any colour space or bit depth converted to 8-bit sRGB RGB,
 * resized to the input size. The [-1, 1] scaling happens on the engine (it is one op there).
 */
import sharp from 'sharp';
import type { InputSize, ResizeMode } from '../backbone/preprocessing.js';

// libvips runs each image on its own threads; with several images decoding at once
// (p-limit in the extract stage) extra threads only fight the backbone for 2 cores.
sharp.concurrency(1);
sharp.cache(false);

export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif'] as const;

const OPEN = { failOn: 'truncated', sequentialRead: true } as const;

/**
 * Decodes one image to `height * width * 3` bytes of RGB. Throws (sharp's message) for
 * anything that is not a complete, decodable image, and for images over sharp's pixel
 * limit (268 megapixels), which it refuses before allocating them.
 *
 * libvips orders a pipeline's operations itself: it resizes before it applies the EXIF
 * orientation, and resizes with alpha premultiplied before dropping it. So a rotated
 * image would not give the features of its upright twin, nor a translucent PNG those of
 * its RGB. Such images are decoded upright and opaque first, then resized; all others
 * take the one-pass path, which gives the same pixels and keeps JPEG shrink-on-load.
 */
export async function decodeImage(bytes: Uint8Array, size: InputSize, resize: ResizeMode): Promise<Buffer> {
  if (bytes.length === 0) throw new Error('empty file');
  const { orientation = 1, hasAlpha = false } = await sharp(bytes, OPEN).metadata();
  const source =
    orientation === 1 && !hasAlpha
      ? sharp(bytes, OPEN)
      : await uprightOpaque(bytes).then(({ data, info }) => sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } }));
  const { data, info } = await source
    .resize(size.width, size.height, { fit: resize === 'fill' ? 'fill' : 'cover', position: 'centre' })
    .toColourspace('srgb')
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || data.length !== size.width * size.height * 3) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${size.width}x${size.height}x3`);
  }
  return data;
}

/** Full-size 8-bit sRGB RGB, EXIF orientation applied and alpha dropped. */
function uprightOpaque(bytes: Uint8Array) {
  return sharp(bytes, OPEN).autoOrient().toColourspace('srgb').removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
}
