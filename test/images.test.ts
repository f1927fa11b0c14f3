import test from 'ava';
import sharp from 'sharp';
import { decodeImage, decodeSources, jpegShrink } from '../data/images.js';
import { pixels } from './helpers/images.js';

const W = 40;
const H = 30;
/** Decode at the image's own size, so the comparison is about colour, not resampling. */
const SAME = { height: H, width: W };

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}
function maxAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const source = pixels(W, H, 77, [150, 110, 90]);
const raw = (data: Buffer, channels: 1 | 3 | 4, width = W, height = H) => sharp(data, { raw: { width, height, channels } });

test('RGB JPEG: H*W*3 bytes close to the source, at any size and in both resize modes', async (t) => {
  const jpeg = await raw(source, 3).jpeg({ quality: 95 }).toBuffer();
  const decoded = await decodeImage(jpeg, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  t.true(meanAbsDiff(decoded, source) < 3, `mean abs diff ${meanAbsDiff(decoded, source)}`);
  for (const size of [
    { height: 64, width: 64 },
    { height: 32, width: 96 },
  ]) {
    t.is((await decodeImage(jpeg, size, 'fill')).length, size.height * size.width * 3);
    t.is((await decodeImage(jpeg, size, 'cover')).length, size.height * size.width * 3);
  }
});

test('grayscale JPEG: three equal channels', async (t) => {
  const gray = Buffer.from(Array.from({ length: W * H }, (_, i) => (i * 7) % 256));
  const jpeg = await raw(gray, 1).toColourspace('b-w').jpeg({ quality: 95 }).toBuffer();
  t.is((await sharp(jpeg).metadata()).channels, 1);
  const decoded = await decodeImage(jpeg, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  let spread = 0;
  for (let i = 0; i < W * H; i++) {
    spread = Math.max(spread, Math.abs(decoded[i * 3] - decoded[i * 3 + 1]), Math.abs(decoded[i * 3] - decoded[i * 3 + 2]));
  }
  t.true(spread <= 1, `channels differ by ${spread}`);
});

test('RGBA PNG: alpha dropped, RGB kept exactly', async (t) => {
  const rgba = Buffer.alloc(W * H * 4);
  for (let i = 0; i < W * H; i++) {
    source.copy(rgba, i * 4, i * 3, i * 3 + 3);
    rgba[i * 4 + 3] = 255; // opaque: the colour must come through unchanged
  }
  const png = await raw(rgba, 4).png().toBuffer();
  t.is((await sharp(png).metadata()).channels, 4);
  const decoded = await decodeImage(png, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  t.is(maxAbsDiff(decoded, source), 0);
});

test('16-bit PNG: converted to 8 bits per channel', async (t) => {
  const png = await raw(source, 3).toColourspace('rgb16').png().toBuffer();
  const meta = await sharp(png).metadata();
  t.is(meta.depth, 'ushort', 'the fixture really is 16-bit');
  t.is(png[24], 16, 'IHDR bit depth');
  const decoded = await decodeImage(png, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  t.true(maxAbsDiff(decoded, source) <= 1, `max abs diff ${maxAbsDiff(decoded, source)}`);
});

test('CMYK JPEG: converted to sRGB', async (t) => {
  const jpeg = await raw(source, 3).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  const meta = await sharp(jpeg).metadata();
  t.is(meta.space, 'cmyk', 'the fixture really is CMYK');
  t.is(meta.channels, 4);
  const decoded = await decodeImage(jpeg, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  // A CMYK round trip goes through colour profiles: near, not exact. Taking the four
  // CMYK bytes as RGBA would be far off.
  t.true(meanAbsDiff(decoded, source) < 12, `mean abs diff ${meanAbsDiff(decoded, source)}`);
});

test('animated GIF: the first frame', async (t) => {
  const red = Buffer.alloc(W * H * 3);
  const green = Buffer.alloc(W * H * 3);
  const blue = Buffer.alloc(W * H * 3);
  for (let i = 0; i < W * H; i++) {
    red[i * 3] = 220;
    green[i * 3 + 1] = 220;
    blue[i * 3 + 2] = 220;
  }
  const gif = await sharp(Buffer.concat([red, green, blue]), { raw: { width: W, height: H * 3, channels: 3, pageHeight: H } })
    .gif({ delay: [100, 100, 100] })
    .toBuffer();
  t.is((await sharp(gif).metadata()).pages, 3, 'the fixture really has 3 frames');
  const decoded = await decodeImage(gif, SAME, 'fill');
  t.is(decoded.length, H * W * 3);
  t.true(meanAbsDiff(decoded, red) < 8, `mean abs diff from the red first frame ${meanAbsDiff(decoded, red)}`);
});

test('EXIF orientation is applied: an upright JPEG and a rotated one tagged orientation 6 decode alike', async (t) => {
  const upright = await raw(source, 3).jpeg({ quality: 95 }).toBuffer();
  // Orientation 6 means "rotate 90 degrees clockwise to display": store the pixels turned the other way.
  const storedTurned = await raw(source, 3).rotate(270).raw().toBuffer();
  const tagged = await raw(storedTurned, 3, H, W).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
  const meta = await sharp(tagged).metadata();
  t.is(meta.orientation, 6);
  t.is(meta.width, H, 'stored sideways');
  const a = await decodeImage(upright, SAME, 'fill');
  const b = await decodeImage(tagged, SAME, 'fill');
  t.true(meanAbsDiff(a, b) < 3, `mean abs diff ${meanAbsDiff(a, b)}`);
  // The check can fail: the same pixels without the tag, stretched to the same size, differ.
  const untagged = await raw(storedTurned, 3, H, W).jpeg({ quality: 95 }).toBuffer();
  const c = await decodeImage(untagged, SAME, 'fill');
  t.true(meanAbsDiff(a, c) > 10, `mean abs diff without orientation ${meanAbsDiff(a, c)}`);
});

test('a zero-byte file, a truncated JPEG, and text named .jpg are rejected', async (t) => {
  await t.throwsAsync(() => decodeImage(new Uint8Array(0), SAME, 'fill'));
  const jpeg = await raw(source, 3).jpeg({ quality: 95 }).toBuffer();
  await t.throwsAsync(() => decodeImage(jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), SAME, 'fill'), undefined, 'truncated JPEG');
  await t.throwsAsync(() => decodeImage(jpeg.subarray(0, 200), SAME, 'fill'), undefined, 'JPEG cut inside the header');
  await t.throwsAsync(() => decodeImage(Buffer.from('hello, this is not an image\n'), SAME, 'fill'), undefined, 'text');
  const png = await raw(source, 3).png().toBuffer();
  await t.throwsAsync(() => decodeImage(png.subarray(0, Math.floor(png.length * 0.6)), SAME, 'fill'), undefined, 'truncated PNG');
});

test('JPEG shrink-on-load keeps the shorter side at least 1.25x the input\'s longer side', (t) => {
  t.is(jpegShrink(4000, 3000, { height: 384, width: 512 }), 4, '4000x3000 -> 1000x750 for 384x512');
  t.is(jpegShrink(4000, 3000, { height: 224, width: 224 }), 8, '4000x3000 -> 500x375 for 224x224');
  t.is(jpegShrink(4000, 3000, { height: 448, width: 597 }), 4, '750 >= 1.25 x 597');
  t.is(jpegShrink(2000, 1500, { height: 448, width: 597 }), 2);
  t.is(jpegShrink(512, 384, { height: 384, width: 512 }), 1, 'TrashNet photos at 384x512: no shrink');
  t.is(jpegShrink(1279, 1279, { height: 512, width: 512 }), 1, '1279 / 2 < 640');
});

test('a truncated JPEG decoded beside other images still says why it failed', async (t) => {
  // libvips shares one error buffer across threads: without care, a failure that ends
  // while another image finishes is reported as "Unknown error" or with the other's reason.
  const noise = Buffer.from(Array.from({ length: 400 * 300 * 3 }, (_, i) => (i * 7919) % 251));
  const busy = await sharp(noise, { raw: { width: 400, height: 300, channels: 3 } }).jpeg().toBuffer();
  const truncated = busy.subarray(0, Math.floor(busy.length / 2));
  const size = { height: 224, width: 224 };
  const messages = new Set<string>();
  for (let round = 0; round < 40; round++) {
    const outcomes = await Promise.allSettled([truncated, busy, truncated, busy, busy].map((bytes) => decodeSources(bytes, [size])));
    for (const outcome of outcomes) if (outcome.status === 'rejected') messages.add(String((outcome.reason as Error).message).split('\n')[0]);
  }
  t.deepEqual([...messages], ['VipsJpeg: premature end of JPEG image']);
});
