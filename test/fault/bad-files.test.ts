/**
 * Fault cases 1.x (README, "Fault injection"): a messy dataset folder. Every awkward file sits in a generated fixture
 * among good images; `pipeline extract` (the real binary) must give each a per-file error
 * or handle it correctly, and still extract every good image with the same numbers as a
 * clean run over the good images alone (bitwise).
 *
 * Two extracts run side by side: "messy" (good images + every awkward file) and
 * "reference" (the same good images + lossless PNG references: the upright version of the
 * EXIF-rotated JPEGs, the first GIF frame, the alpha-dropped RGB, ...). Features are then
 * compared by content hash across the two caches.
 */
import { copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { sha256 } from '../../data/hash.js';
import { type CacheState, type CliResult, cosine, nearest, readCache, runPipeline } from '../helpers/fault-cli.js';
import { Figures } from '../helpers/fault-figures.js';
import {
  EXTRACT_FLAGS,
  animatedGif,
  cmykJpeg,
  exifJpeg,
  frameAsPng,
  grayAsRgbPng,
  grayJpeg,
  hugeBlackPng,
  pixels,
  png,
  png16,
  pngWithAlpha,
  uprightOf,
} from '../helpers/fault-fixtures.js';
import { classTint, encode, makeDataset } from '../helpers/images.js';
import { writeRandomModel } from '../helpers/random-model.js';
import { fileTempDir } from '../helpers/shared.js';

const figures = new Figures('bad-files');
const temp = fileTempDir('pipeline-fault-files-');
const W = 48;
const H = 40;
const messy = join(temp.dir, 'messy');
const reference = join(temp.dir, 'reference');
/** "caf\xe9.jpg": Latin-1 e-acute, not valid UTF-8. */
const NON_UTF8_NAME = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x2e, 0x6a, 0x70, 0x67]);
const nonUtf8Path = Buffer.concat([Buffer.from(join(messy, 'charlie') + '/'), NON_UTF8_NAME]);

/** Contents by role, so tests can find their rows by sha256. */
const hashes: Record<string, string> = {};
let goodImages: string[] = [];
let firstRun: CliResult;
let secondRun: CliResult;
let referenceRun: CliResult;
let messyAfterFirst: CacheState;
let messyCache: CacheState;
let referenceCache: CacheState;

async function put(root: string, rel: string, bytes: Buffer, role?: string): Promise<void> {
  await mkdir(join(root, rel, '..'), { recursive: true });
  await writeFile(join(root, rel), bytes);
  if (role) hashes[role] = sha256(bytes);
}

test.before(async () => {
  const { modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, seed: 101 });
  const good = await makeDataset(messy, { classes: ['alpha', 'bravo', 'charlie'], perClass: 8, width: W, height: H, seed: 5000 });
  goodImages = [...good.images];
  for (const rel of goodImages) {
    await mkdir(join(reference, rel, '..'), { recursive: true });
    await copyFile(join(messy, rel), join(reference, rel));
  }

  const base = pixels(W, H, 77, classTint(1));
  // Bad files: each must become a per-file error.
  await put(messy, 'alpha/empty.jpg', Buffer.alloc(0), 'empty');
  const whole = await raw3jpeg(pixels(W, H, 78, classTint(0)));
  await put(messy, 'alpha/truncated.jpg', whole.subarray(0, Math.floor(whole.length * 0.6)), 'truncated');
  await put(messy, 'bravo/notes.jpg', Buffer.from('shopping list: milk, eggs\nthis is not a picture\n'), 'text');
  await put(messy, 'alpha/huge.png', await hugeBlackPng(20000), 'huge');

  // Awkward but good files: each must be extracted, with the reference's numbers where one exists.
  const cmyk = await cmykJpeg(pixels(W, H, 76, [150, 110, 90]), W, H);
  await put(messy, 'bravo/cmyk.jpg', cmyk, 'cmyk');
  await put(reference, 'refs/cmyk-as-srgb.png', await frameAsPng(cmyk), 'cmykAsSrgb');
  await put(reference, 'refs/rgb.png', await png(base, W, H), 'rgb');
  await put(messy, 'bravo/deep16.png', await png16(base, W, H), 'png16');
  await put(messy, 'charlie/alpha-varying.png', await pngWithAlpha(base, W, H, (i) => (i * 7) % 256), 'alphaVarying');
  await put(messy, 'charlie/alpha-opaque.png', await pngWithAlpha(base, W, H, () => 255), 'alphaOpaque');
  const gray = await grayJpeg(pixels(W, H, 79, classTint(2)), W, H);
  await put(messy, 'charlie/gray.jpg', gray, 'gray');
  await put(reference, 'refs/gray-as-rgb.png', await grayAsRgbPng(gray), 'grayRef');
  const gif = await animatedGif([pixels(W, H, 80, classTint(0)), pixels(W, H, 81, classTint(2))], W, H);
  await put(messy, 'bravo/animated.gif', gif, 'gif');
  await put(reference, 'refs/gif-frame-0.png', await frameAsPng(gif, 0), 'gifFrame0');
  await put(reference, 'refs/gif-frame-1.png', await frameAsPng(gif, 1), 'gifFrame1');
  for (const orientation of [6, 8] as const) {
    const jpeg = await exifJpeg(pixels(W, H, 82 + orientation, classTint(orientation)), W, H, orientation);
    await put(messy, `charlie/exif-${orientation}.jpg`, jpeg, `exif${orientation}`);
    const upright = await uprightOf(jpeg, orientation);
    await put(reference, `refs/upright-${orientation}.png`, await png(upright.data, upright.width, upright.height), `upright${orientation}`);
    await put(reference, `refs/stored-${orientation}.png`, await frameAsPng(jpeg), `stored${orientation}`);
  }

  // Symlink loops: a link to its own folder, and two links pointing at each other.
  await symlink('.', join(messy, 'alpha', 'loop-self'));
  await symlink('loop-b', join(messy, 'bravo', 'loop-a'));
  await symlink('loop-a', join(messy, 'bravo', 'loop-b'));
  await symlink(join(messy, 'charlie'), join(messy, 'charlie', 'sub-loop'));

  // A good image whose file name is not valid UTF-8.
  const nonUtf8 = await raw3jpeg(pixels(W, H, 90, classTint(2)));
  await writeFile(nonUtf8Path, nonUtf8);
  hashes.nonUtf8 = sha256(nonUtf8);
  await put(reference, 'refs/non-utf8-content.jpg', nonUtf8);

  // Class folders without images: one empty, one with only a text file.
  await mkdir(join(messy, 'delta'), { recursive: true });
  await put(messy, 'echo/README.txt', Buffer.from('no images here\n'));

  // The content an image will have after it changes on disk between two runs.
  const changedPixels = pixels(W, H, 91, [30, 220, 140]);
  const changed = await raw3jpeg(changedPixels);
  hashes.changed = sha256(changed);
  await put(reference, 'refs/changed.jpg', changed);

  const args = (root: string, db: string) => ['extract', '--data', root, ...EXTRACT_FLAGS(modelJson), '--db', db];
  [firstRun, referenceRun] = await Promise.all([
    runPipeline(temp.dir, args(messy, join(temp.dir, 'messy.sqlite'))),
    runPipeline(temp.dir, args(reference, join(temp.dir, 'reference.sqlite'))),
  ]);
  messyAfterFirst = readCache(join(temp.dir, 'messy.sqlite'));
  hashes.beforeChange = sha256(await readFile(join(messy, 'alpha/alpha_3.jpg')));
  await writeFile(join(messy, 'alpha/alpha_3.jpg'), changed);
  secondRun = await runPipeline(temp.dir, args(messy, join(temp.dir, 'messy.sqlite')));
  messyCache = readCache(join(temp.dir, 'messy.sqlite'));
  referenceCache = readCache(join(temp.dir, 'reference.sqlite'));
});

test.after.always(() => {
  figures.write();
  try {
    unlinkSync(nonUtf8Path); // fs.rm cannot name it through a string path
  } catch {
    /* already gone */
  }
  rmSync(temp.dir, { recursive: true, force: true });
});

const raw3jpeg = (data: Buffer) => encode(data, W, H, 'jpeg');

/** Records the figure row and asserts it held. */
function held(t: ExecutionContext, name: string, tries: number, ok: boolean, result: string): void {
  figures.add({ case: name, tries, result, held: ok });
  t.true(ok, `${name}: ${result}`);
}

const feature = (cache: CacheState, role: string) => cache.features.get(hashes[role]);
const failure = (cache: CacheState, role: string) => cache.failures.get(hashes[role]);
const same = (a: Buffer | undefined, b: Buffer | undefined) => a !== undefined && b !== undefined && a.equals(b);

test('both extracts exit 0, the caches pass integrity_check, no stack traces', (t) => {
  for (const [name, run] of [
    ['messy, first run', firstRun],
    ['messy, second run', secondRun],
    ['reference', referenceRun],
  ] as const) {
    t.is(run.code, 0, `${name}: ${run.stderr}`);
    t.false(/^\s+at /m.test(run.stderr), `${name}: ${run.stderr}`);
    t.false(run.stderr.includes('pipeline: '), `${name}: ${run.stderr}`);
  }
  t.is(messyCache.integrity, 'ok');
  t.is(referenceCache.integrity, 'ok');
  t.is(messyCache.featureSets.length, 1);
  t.deepEqual(messyCache.featureSets, referenceCache.featureSets, 'same model, size and engine: same feature set id');
});

test('every good image is extracted, bitwise equal to the clean reference run', (t) => {
  const goodHashes = goodImages.filter((rel) => rel !== 'alpha/alpha_3.jpg').map((rel) => messyCache.items.find((i) => i.path === rel)?.sha256);
  const missing = goodHashes.filter((h) => h === undefined || !messyCache.features.has(h));
  const differing = goodHashes.filter((h) => h && messyCache.features.has(h) && !same(messyCache.features.get(h), referenceCache.features.get(h)));
  held(
    t,
    '1.00 good images among bad files',
    goodImages.length,
    missing.length === 0 && differing.length === 0 && messyAfterFirst.featureRows === messyAfterFirst.distinctFeatures,
    `${goodImages.length - missing.length}/${goodImages.length} extracted, ${differing.length} differ from the clean run`,
  );
});

for (const [name, role, pattern] of [
  ['1.01 zero-byte file', 'empty', /^empty file$/i],
  ['1.02 truncated JPEG', 'truncated', /premature end of JPEG/i],
  ['1.03 text file named .jpg', 'text', /unsupported image format/i],
  ['1.08 20000 x 20000 PNG (400 MP)', 'huge', /pixel limit/i],
] as const) {
  test(`${name}: a per-file error, no feature row`, (t) => {
    const f = failure(messyCache, role);
    const ok = f !== undefined && pattern.test(f.error) && !f.error.includes('\n') && !messyCache.features.has(hashes[role]);
    const listed = firstRun.stdout.includes(`failed: ${f?.path}: `);
    held(t, name, 1, ok && listed, f ? `per-file error "${f.error}"${listed ? ', listed by extract' : ''}` : 'no failure recorded');
  });
}

/** Which reference image a vector is closest to (by role name where known), and how decisively. */
function closest(v: Buffer): { role: string; ratio: number } {
  const { key, ratio } = nearest(v, referenceCache.features);
  return { role: Object.entries(hashes).find(([, h]) => h === key)?.[0] ?? key.slice(0, 8), ratio };
}

test('1.04 CMYK JPEG: extracted, colours converted to sRGB (nearest reference: its sRGB conversion)', (t) => {
  const v = feature(messyCache, 'cmyk');
  const near = v ? closest(v) : undefined;
  // The reference is libvips' own CMYK -> sRGB conversion at full size, stored losslessly;
  // the pipeline converts after resizing, so rounding may differ slightly.
  held(
    t,
    '1.04 CMYK JPEG',
    1,
    v !== undefined && !failure(messyCache, 'cmyk') && near?.role === 'cmykAsSrgb' && near.ratio < 0.2,
    near ? `extracted; nearest of ${referenceCache.features.size} reference images: ${near.role} (distance ratio to runner-up ${near.ratio.toFixed(2)})` : 'not extracted',
  );
});

test('1.05 16-bit PNG: extracted, the same image as the 8-bit PNG up to rounding', (t) => {
  const v = feature(messyCache, 'png16');
  const near = v ? closest(v) : undefined;
  // Resizing in 16 bits then rounding moves pixels by at most 1/255: far closer than any other image.
  held(
    t,
    '1.05 16-bit PNG',
    1,
    v !== undefined && near?.role === 'rgb' && near.ratio < 0.2,
    near ? `extracted; nearest reference: ${near.role} (distance ratio to runner-up ${near.ratio.toFixed(3)})` : 'not extracted',
  );
});

test('1.06 PNG with alpha: alpha dropped, features equal the RGB image (opaque and varying alpha)', (t) => {
  const rgb = feature(referenceCache, 'rgb');
  const opaque = same(feature(messyCache, 'alphaOpaque'), rgb);
  const varying = same(feature(messyCache, 'alphaVarying'), rgb);
  const similarity = feature(messyCache, 'alphaVarying') ? cosine(feature(messyCache, 'alphaVarying')!, rgb!) : 0;
  held(
    t,
    '1.06 PNG with alpha',
    2,
    opaque && varying,
    `opaque alpha: ${opaque ? 'bitwise equal' : 'differs'}; varying alpha: ${varying ? 'bitwise equal' : `differs (cosine ${similarity.toFixed(4)})`} to the RGB image`,
  );
});

test('1.07 grayscale JPEG: extracted as gray replicated to RGB', (t) => {
  const ok = same(feature(messyCache, 'gray'), feature(referenceCache, 'grayRef'));
  held(t, '1.07 grayscale JPEG', 1, ok, ok ? 'bitwise equal to the gray-as-RGB PNG' : 'differs from the gray-as-RGB PNG');
});

test('1.09 animated GIF: the first frame', (t) => {
  const v = feature(messyCache, 'gif');
  const first = same(v, feature(referenceCache, 'gifFrame0'));
  const second = same(v, feature(referenceCache, 'gifFrame1'));
  held(t, '1.09 animated GIF (2 frames)', 1, first && !second, first ? 'bitwise equal to frame 0' : 'differs from frame 0');
});

test('1.10 EXIF-rotated JPEG (orientations 6 and 8): features equal the upright image', (t) => {
  const details: string[] = [];
  let ok = true;
  for (const o of [6, 8]) {
    const v = feature(messyCache, `exif${o}`);
    const upright = feature(referenceCache, `upright${o}`)!;
    const stored = feature(referenceCache, `stored${o}`)!;
    const equal = same(v, upright);
    const toUpright = v ? cosine(v, upright) : 0;
    const toStored = v ? cosine(v, stored) : 0;
    // The orientation must be applied (closer to upright than to the stored pixels) and exactly.
    const near = v ? closest(v).role : 'none';
    ok &&= equal && toUpright > toStored;
    details.push(`${o}: ${equal ? 'bitwise equal to upright' : `not equal to upright; nearest reference ${near}`} (cosine upright ${toUpright.toFixed(4)}, unrotated ${toStored.toFixed(4)})`);
  }
  held(t, '1.10 EXIF-rotated JPEG', 2, ok, details.join('; '));
});

test('1.11 symlink loops inside the dataset: scan ends, loops skipped, images found once', (t) => {
  const paths = messyCache.items.map((i) => i.path);
  const viaLoop = paths.filter((p) => p.includes('loop'));
  const unreadable = /skipped \d+ hidden, \d+ non-image, (\d+) unreadable/.exec(firstRun.stderr)?.[1];
  const ok = firstRun.code === 0 && viaLoop.length === 0 && Number(unreadable) >= 3 && new Set(paths).size === paths.length;
  held(t, '1.11 symlink loops (self, mutual, parent)', 3, ok, `scan finished; ${viaLoop.length} paths through a loop; ${unreadable} entries reported unreadable`);
});

test('1.12 a file name that is not valid UTF-8: extracted under a lossy name', (t) => {
  const item = messyCache.items.find((i) => i.sha256 === hashes.nonUtf8);
  const extracted = messyCache.features.has(hashes.nonUtf8) && item !== undefined && /^charlie\/caf.*\.jpg$/.test(item.path);
  held(
    t,
    '1.12 file name not valid UTF-8',
    1,
    firstRun.code === 0 && extracted,
    extracted ? `extracted under a lossy name (${JSON.stringify(item.path)})` : item ? `listed as ${JSON.stringify(item.path)} without features` : 'not extracted',
  );
});

test('1.13 class folders without images are not classes', (t) => {
  const labels = [...new Set(messyCache.items.map((i) => i.label))].sort();
  const ok = labels.join(',') === 'alpha,bravo,charlie' && /in 3 classes \(alpha, bravo, charlie\)/.test(firstRun.stderr);
  held(t, '1.13 class folder with no images (empty, text only)', 2, ok, `classes: ${labels.join(', ')}`);
});

test('1.14 an image that changes on disk between two runs is re-extracted', (t) => {
  const row = messyCache.items.find((i) => i.path === 'alpha/alpha_3.jpg');
  const reextracted = /^done: .* 1 extracted in /m.test(secondRun.stdout);
  const ok =
    row?.sha256 === hashes.changed &&
    same(messyCache.features.get(hashes.changed), referenceCache.features.get(hashes.changed)) &&
    messyAfterFirst.items.find((i) => i.path === 'alpha/alpha_3.jpg')?.sha256 === hashes.beforeChange &&
    reextracted;
  held(t, '1.14 image changed on disk between two runs', 1, ok, `second run: ${secondRun.stdout.split('\n')[0]}`);
});

test('second run: nothing else re-extracted, earlier rows bitwise unchanged', (t) => {
  for (const [hash, vector] of messyAfterFirst.features) t.true(messyCache.features.get(hash)?.equals(vector), hash);
  t.is(messyCache.featureRows, messyCache.distinctFeatures);
});
