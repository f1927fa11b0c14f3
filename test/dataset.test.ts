import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { scanDataset } from '../data/dataset.js';
import { UserError } from '../core/errors.js';
import { writeImage } from './helpers/images.js';
import { tempDir } from './helpers/shared.js';

const SPLIT_NAMES = {
  train: 'one-indexed-files-notrash_train.txt',
  val: 'one-indexed-files-notrash_val.txt',
  test: 'one-indexed-files-notrash_test.txt',
};

async function images(root: string, paths: string[]): Promise<void> {
  for (const [i, path] of paths.entries()) {
    await writeImage(join(root, path), { seed: i + 1, format: path.endsWith('.png') ? 'png' : 'jpeg' });
  }
}

test('classes and files are sorted by code unit; labels come from the top-level folder', async (t) => {
  const root = tempDir(t);
  await images(root, ['zeta/b.jpg', 'zeta/a.jpg', 'beta/z.png', 'beta/A.jpg', 'Alpha/x.jpeg', 'alpha/y.JPG']);
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['Alpha', 'alpha', 'beta', 'zeta']);
  t.deepEqual(
    dataset.items.map((i) => [i.path, i.label]),
    [
      ['Alpha/x.jpeg', 'Alpha'],
      ['alpha/y.JPG', 'alpha'],
      ['beta/A.jpg', 'beta'],
      ['beta/z.png', 'beta'],
      ['zeta/a.jpg', 'zeta'],
      ['zeta/b.jpg', 'zeta'],
    ],
  );
  t.is(dataset.items[0].absolutePath, join(root, 'Alpha', 'x.jpeg'));
  t.true(dataset.items.every((i) => i.split === null));
  t.is(dataset.splitsFrom, null);
  t.deepEqual(dataset.skipped, { hidden: 0, nonImage: 0, unreadable: 0 });
});

test('hidden entries and non-image files are skipped and counted', async (t) => {
  const root = tempDir(t);
  await images(root, ['cats/c1.jpg', 'cats/c2.png', 'dogs/d1.jpg', '.hiddenclass/h.jpg']);
  await writeFile(join(root, 'cats', '.DS_Store'), 'x'); // hidden
  await writeImage(join(root, 'dogs', '._d1.jpg')); // hidden (macOS resource fork)
  await writeFile(join(root, 'dogs', 'notes.txt'), 'text'); // non-image
  await writeFile(join(root, 'cats', 'photo.jpg.bak'), 'x'); // non-image
  await writeFile(join(root, 'README.md'), '# data'); // loose file at the top: non-image
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['cats', 'dogs']);
  t.deepEqual(
    dataset.items.map((i) => i.path),
    ['cats/c1.jpg', 'cats/c2.png', 'dogs/d1.jpg'],
  );
  t.is(dataset.skipped.hidden, 3);
  t.is(dataset.skipped.nonImage, 3);
  t.is(dataset.skipped.unreadable, 0);
});

test('a subfolder without images is not a class', async (t) => {
  const root = tempDir(t);
  await images(root, ['cats/c1.jpg']);
  await mkdir(join(root, 'empty'));
  await mkdir(join(root, 'textonly', 'deeper'), { recursive: true });
  await writeFile(join(root, 'textonly', 'deeper', 'a.txt'), 'x');
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['cats']);
  t.is(dataset.items.length, 1);
});

test('images in nested folders belong to their top-level class', async (t) => {
  const root = tempDir(t);
  await images(root, ['cats/indoor/a.jpg', 'cats/outdoor/deep/b.jpg', 'cats/c.jpg', 'dogs/2024/d.jpg']);
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['cats', 'dogs']);
  t.deepEqual(
    dataset.items.map((i) => [i.path, i.label]),
    [
      ['cats/c.jpg', 'cats'],
      ['cats/indoor/a.jpg', 'cats'],
      ['cats/outdoor/deep/b.jpg', 'cats'],
      ['dogs/2024/d.jpg', 'dogs'],
    ],
  );
});

async function writeSplits(folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, SPLIT_NAMES.train), 'cats1.jpg 1\ndogs1.jpg 2\n');
  await writeFile(join(folder, SPLIT_NAMES.val), 'cats2.jpg 1\n');
  await writeFile(join(folder, SPLIT_NAMES.test), 'dogs2.jpg 2\r\n');
}

async function splitDataset(root: string): Promise<void> {
  await images(root, ['cats/cats1.jpg', 'cats/cats2.jpg', 'dogs/dogs1.jpg', 'dogs/dogs2.jpg', 'dogs/dogs3.jpg']);
}

const splitsOf = (dataset: Awaited<ReturnType<typeof scanDataset>>) => Object.fromEntries(dataset.items.map((i) => [i.path, i.split]));
const EXPECTED_SPLITS = {
  'cats/cats1.jpg': 'train',
  'cats/cats2.jpg': 'val',
  'dogs/dogs1.jpg': 'train',
  'dogs/dogs2.jpg': 'test',
  'dogs/dogs3.jpg': null,
};

test('split lists are found in the dataset root', async (t) => {
  const root = tempDir(t);
  await splitDataset(root);
  await writeSplits(root);
  const dataset = await scanDataset(root);
  t.is(dataset.splitsFrom, root);
  t.deepEqual(splitsOf(dataset), EXPECTED_SPLITS);
  t.deepEqual(dataset.classes, ['cats', 'dogs']);
});

test('split lists are found in <root>/splits, which is not a class', async (t) => {
  const root = tempDir(t);
  await splitDataset(root);
  await writeSplits(join(root, 'splits'));
  const dataset = await scanDataset(root);
  t.is(dataset.splitsFrom, join(root, 'splits'));
  t.deepEqual(splitsOf(dataset), EXPECTED_SPLITS);
  t.deepEqual(dataset.classes, ['cats', 'dogs']);
});

test('split lists from --splits elsewhere; a --splits folder without them is a UserError', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'data');
  await splitDataset(root);
  await writeSplits(join(dir, 'lists'));
  const dataset = await scanDataset(root, join(dir, 'lists'));
  t.is(dataset.splitsFrom, join(dir, 'lists'));
  t.deepEqual(splitsOf(dataset), EXPECTED_SPLITS);
  await mkdir(join(dir, 'nolists'));
  const error = await t.throwsAsync(() => scanDataset(root, join(dir, 'nolists')), { instanceOf: UserError });
  t.true(error!.message.includes(join(dir, 'nolists')), error!.message);
});

test('symlink loops do not hang and are counted as unreadable', async (t) => {
  t.timeout(30_000);
  const root = tempDir(t);
  await images(root, ['cats/c1.jpg', 'dogs/d1.jpg']);
  await symlink(join(root, 'cats'), join(root, 'cats', 'again')); // a folder containing a link to itself
  await symlink('..', join(root, 'dogs', 'up')); // a link back to the dataset root
  await symlink('self', join(root, 'cats', 'self')); // ELOOP: a link to itself
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['cats', 'dogs']);
  t.deepEqual(
    dataset.items.map((i) => i.path),
    ['cats/c1.jpg', 'dogs/d1.jpg'],
  );
  t.is(dataset.skipped.unreadable, 3);
});

test('a symlinked class folder and symlinked images are followed', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'data');
  await images(dir, ['elsewhere/e1.jpg', 'loose.jpg']);
  await images(root, ['cats/c1.jpg']);
  await symlink(join(dir, 'elsewhere'), join(root, 'birds'));
  await symlink(join(dir, 'loose.jpg'), join(root, 'cats', 'c2.jpg'));
  const dataset = await scanDataset(root);
  t.deepEqual(dataset.classes, ['birds', 'cats']);
  t.deepEqual(
    dataset.items.map((i) => i.path),
    ['birds/e1.jpg', 'cats/c1.jpg', 'cats/c2.jpg'],
  );
});

test('a missing folder, a file instead of a folder, and a dataset without images: UserError naming the path', async (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'nope');
  const e1 = await t.throwsAsync(() => scanDataset(missing), { instanceOf: UserError });
  t.true(e1!.message.includes(missing), e1!.message);
  await writeFile(join(dir, 'file.jpg'), 'x');
  const e2 = await t.throwsAsync(() => scanDataset(join(dir, 'file.jpg')), { instanceOf: UserError });
  t.true(e2!.message.includes(join(dir, 'file.jpg')), e2!.message);
  const empty = join(dir, 'empty');
  await mkdir(join(empty, 'cats'), { recursive: true });
  await writeFile(join(empty, 'cats', 'readme.txt'), 'x');
  await writeImage(join(empty, 'toplevel.jpg')); // loose images at the top belong to no class
  const e3 = await t.throwsAsync(() => scanDataset(empty), { instanceOf: UserError });
  t.true(e3!.message.includes(empty), e3!.message);
});
