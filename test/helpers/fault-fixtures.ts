/**
 * Fixtures of the fault-injection suite: the small extract setup every fault test shares
 * (random alpha-0.35 MobileNetV2 at 64x64 on wasm, batch 4), awkward image files made with
 * sharp, and a 20000 x 20000 PNG built in a few hundred milliseconds.
 */
import { deflateRawSync, constants as zlibConstants, crc32 } from 'node:zlib';
import { createDeflateRaw } from 'node:zlib';
import sharp from 'sharp';
import { pixels } from './images.js';

/** Input size and engine of every fault test: fast, and still several batches per run. */
export const SIZE = '64x64';
export const EXTRACT_FLAGS = (modelJson: string) => ['--model', modelJson, '--size', SIZE, '--backend', 'wasm', '--batch', '4'] as const;

/**
 * A small sweep: 2 x 2 variants (hidden 0/128 x learning rate 0.001/0.01) x 2 seeds, up to
 * 30 epochs with early stopping (patience 4), batch size 1 so training takes a few seconds
 * and runs finish at different moments.
 */
export const SWEEP_YAML = `sweep:
  method: grid
  seeds: [1, 2]
  early_stopping: {monitor: val_loss, patience: 4}
  parameters:
    dropout: {value: 0.2}
    hidden_units: {values: [0, 128]}
    learning_rate: {values: [0.001, 0.01]}
    epochs: {value: 30}
    batch_size: {value: 1}
`;

export const raw = (data: Buffer, width: number, height: number, channels: 1 | 3 | 4 = 3) =>
  sharp(data, { raw: { width, height, channels } });

/** Lossless PNG of RGB pixels. */
export const png = (data: Buffer, width: number, height: number) => raw(data, width, height).png().toBuffer();

/** A JPEG in the CMYK colour space. */
export const cmykJpeg = (data: Buffer, width: number, height: number) => raw(data, width, height).toColourspace('cmyk').jpeg({ quality: 92 }).toBuffer();

/** A 16-bit-per-channel PNG holding exactly `data * 257` (so 8-bit value v is 16-bit v*257). */
export function png16(data: Buffer, width: number, height: number): Promise<Buffer> {
  const wide = Uint16Array.from(data, (v) => v * 257);
  return sharp(wide, { raw: { width, height, channels: 3 } }).toColourspace('rgb16').png().toBuffer();
}

/** RGBA PNG: the RGB of `data` with alpha from `alpha(i)`. */
export function pngWithAlpha(data: Buffer, width: number, height: number, alpha: (i: number) => number): Promise<Buffer> {
  const rgba = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data.copy(rgba, i * 4, i * 3, i * 3 + 3);
    rgba[i * 4 + 3] = alpha(i);
  }
  return raw(rgba, width, height, 4).png().toBuffer();
}

/** A one-channel (grayscale) JPEG. */
export const grayJpeg = (data: Buffer, width: number, height: number) => raw(data, width, height).toColourspace('b-w').jpeg({ quality: 92 }).toBuffer();

/** A two-frame animated GIF. */
export async function animatedGif(frames: Buffer[], width: number, height: number): Promise<Buffer> {
  const encoded = await Promise.all(frames.map((f) => png(f, width, height)));
  return sharp(encoded, { join: { animated: true } }).gif().toBuffer();
}

/** A JPEG whose stored pixels are `data` and whose EXIF says to show them rotated (orientation 6 or 8). */
export const exifJpeg = (data: Buffer, width: number, height: number, orientation: number) =>
  raw(data, width, height).jpeg({ quality: 92 }).withMetadata({ orientation }).toBuffer();

/**
 * The upright pixels of a JPEG with EXIF orientation 6 (rotate 90 degrees clockwise to
 * show) or 8 (counter-clockwise), decoded without rotation and rotated here in plain code.
 */
export async function uprightOf(jpeg: Buffer, orientation: 6 | 8): Promise<{ data: Buffer; width: number; height: number }> {
  const { data: stored, info } = await sharp(jpeg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const { width: w, height: h } = info;
  const out = Buffer.alloc(w * h * 3);
  // Output is h wide and w tall.
  for (let y = 0; y < w; y++) {
    for (let x = 0; x < h; x++) {
      const [sx, sy] = orientation === 6 ? [y, h - 1 - x] : [w - 1 - y, x];
      stored.copy(out, (y * h + x) * 3, (sy * w + sx) * 3, (sy * w + sx) * 3 + 3);
    }
  }
  return { data: out, width: h, height: w };
}

/** Decodes one frame (page) of an image to lossless RGB PNG bytes. */
export async function frameAsPng(bytes: Buffer, page = 0): Promise<Buffer> {
  const { data, info } = await sharp(bytes, { page }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return png(data, info.width, info.height);
}

/** One-channel pixels of a grayscale image, replicated to RGB and stored as PNG. */
export async function grayAsRgbPng(bytes: Buffer): Promise<Buffer> {
  const { data, info } = await sharp(bytes).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  const rgb = Buffer.alloc(info.width * info.height * 3);
  for (let i = 0; i < info.width * info.height; i++) rgb[i * 3] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = data[i];
  return png(rgb, info.width, info.height);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/**
 * A complete, valid black RGB PNG of `side` x `side` pixels (20000: 400 megapixels, over
 * sharp's 268-megapixel limit). Built from a repeated full-flush deflate segment, so it
 * takes ~0.3 s and ~1.2 MB instead of compressing 1.2 GB.
 */
export async function hugeBlackPng(side = 20000): Promise<Buffer> {
  const rowsPerSegment = 400;
  if (side % rowsPerSegment !== 0) throw new Error(`side must be a multiple of ${rowsPerSegment}`);
  const rowBytes = side * 3 + 1;
  const block = Buffer.alloc(rowBytes * rowsPerSegment);
  // After a full flush the compressor forgets its history: every later segment is identical.
  const deflate = createDeflateRaw({ level: 9 });
  const parts: Buffer[] = [];
  deflate.on('data', (chunk: Buffer) => parts.push(chunk));
  const segment = async () => {
    deflate.write(block);
    await new Promise<void>((ready) => deflate.flush(zlibConstants.Z_FULL_FLUSH, () => ready()));
    const bytes = Buffer.concat(parts);
    parts.length = 0;
    return bytes;
  };
  const first = await segment();
  const repeated = await segment();
  deflate.destroy();
  const final = deflateRawSync(Buffer.alloc(0)); // an empty final block
  const total = rowBytes * side;
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE((((total % 65521) << 16) | 1) >>> 0); // adler32 of all-zero bytes
  const idat = Buffer.concat([Buffer.from([0x78, 0xda]), first, ...Array<Buffer>(side / rowsPerSegment - 1).fill(repeated), final, adler]);
  const header = Buffer.alloc(13);
  header.writeUInt32BE(side, 0);
  header.writeUInt32BE(side, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', idat),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

export { pixels };

