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

/**
 * Decodes one image to `height * width * 3` bytes of RGB. Throws (sharp's message) for
 * anything that is not a complete, decodable image, and for images over sharp's pixel
 * limit (268 megapixels), which it refuses before allocating them.
 */
export async function decodeImage(bytes: Uint8Array, size: InputSize, resize: ResizeMode): Promise<Buffer> {
  if (bytes.length === 0) throw new Error('empty file');
  const { data, info } = await sharp(bytes, { failOn: 'truncated', sequentialRead: true })
    .rotate() // applies EXIF orientation
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
