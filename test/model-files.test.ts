/** The one reader of model.json + shards (backbone/model-files.ts), on files written here. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { readModelFiles } from '../backbone/model-files.js';
import { UserError } from '../core/errors.js';
import { tempDir } from './helpers/shared.js';

const spec = (name: string, n: number) => ({ name, shape: [n], dtype: 'float32' as const });

test('shards of several groups are concatenated in manifest order, data is the same bytes', async (t) => {
  const dir = tempDir(t);
  await writeFile(join(dir, 'b.bin'), Buffer.from(Float32Array.of(3, 4).buffer));
  await writeFile(join(dir, 'a.bin'), Buffer.from(Float32Array.of(1, 2).buffer));
  await writeFile(join(dir, 'c.bin'), Buffer.from(Float32Array.of(5).buffer));
  const manifest = [
    { paths: ['b.bin', 'a.bin'], weights: [spec('x', 4)] },
    { paths: ['c.bin'], weights: [spec('y', 1)] },
  ];
  await writeFile(join(dir, 'model.json'), JSON.stringify({ modelTopology: {}, weightsManifest: manifest }));
  const files = await readModelFiles(join(dir, 'model.json'), 'm', '--model');
  t.deepEqual([...new Float32Array(files.data)], [3, 4, 1, 2, 5]);
  t.deepEqual([...new Float32Array(files.bytes.buffer.slice(files.bytes.byteOffset, files.bytes.byteOffset + files.bytes.byteLength))], [3, 4, 1, 2, 5]);
  t.deepEqual(files.specs.map((s) => s.name), ['x', 'y']);
});

test('a shard named outside the model folder is refused, a missing one named', async (t) => {
  const dir = tempDir(t);
  await mkdir(join(dir, 'model'));
  await writeFile(join(dir, 'secret.bin'), Buffer.alloc(4));
  await writeFile(join(dir, 'model', 'model.json'), JSON.stringify({ weightsManifest: [{ paths: ['../secret.bin'], weights: [spec('x', 1)] }] }));
  await t.throwsAsync(readModelFiles(join(dir, 'model', 'model.json'), 'model/model.json', '--model'), {
    instanceOf: UserError,
    message: 'model/model.json names a weight shard outside its folder: ../secret.bin',
  });
  await writeFile(join(dir, 'model', 'model.json'), JSON.stringify({ weightsManifest: [{ paths: ['gone.bin'], weights: [spec('x', 1)] }] }));
  await t.throwsAsync(readModelFiles(join(dir, 'model', 'model.json'), 'model/model.json', '--model'), {
    instanceOf: UserError,
    message: `weight shard missing: ${join(dir, 'model', 'gone.bin')} (listed in model/model.json)`,
  });
  await t.throwsAsync(readModelFiles(join(dir, 'nowhere.json'), 'nowhere.json', '--model'), {
    instanceOf: UserError,
    message: `model file not found: ${join(dir, 'nowhere.json')} (--model)`,
  });
});
