/**
 * `pipeline export-features`: the cached vectors as NumPy `features.npy` (float32, N x dim)
 * and `index.csv` (path,label,split,sha256 in the same row order), for use from Python.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'csv-stringify/sync';
import type { FeatureSet } from '../cache/features.js';
import { type StoreLike, storeOf } from '../cache/store.js';
import { UserError, messageOf } from '../core/errors.js';
import { writeFileAtomically } from '../core/files.js';

export interface ExportedFeatures {
  readonly rows: number;
  readonly dim: number;
  readonly files: readonly string[];
}

/** `view`: which view's vectors (data/views.ts), 'original' by default. */
export async function exportFeatures(db: StoreLike, featureSet: FeatureSet, outDir: string, view = 'original'): Promise<ExportedFeatures> {
  const store = storeOf(db);
  const items = await store.listItems(featureSet.id);
  const vectors = await store.loadVectors(featureSet.id, items.map((item) => item.sha256), view);
  const rows = items.filter((item) => vectors.has(item.sha256));
  if (rows.length === 0) {
    throw new UserError(`feature set ${featureSet.id} has no extracted features of view ${view}: run \`pipeline extract${view === 'original' ? '' : ` --views ${view}`}\``);
  }
  const matrix = new Float32Array(rows.length * featureSet.dim);
  rows.forEach((item, i) => matrix.set(vectors.get(item.sha256)!, i * featureSet.dim));
  const csv = stringify(
    rows.map((item) => [item.path, item.label, item.split ?? '', item.sha256]),
    { header: true, columns: ['path', 'label', 'split', 'sha256'] },
  );
  const files = [join(outDir, 'features.npy'), join(outDir, 'index.csv')];
  try {
    await mkdir(outDir, { recursive: true });
  } catch (error) {
    throw new UserError(`cannot create ${outDir} (--out): ${messageOf(error)}`);
  }
  await writeFileAtomically(files[0], npy(matrix, [rows.length, featureSet.dim]), '--out');
  await writeFileAtomically(files[1], csv, '--out');
  return { rows: rows.length, dim: featureSet.dim, files };
}

/** NumPy .npy v1.0: magic, header length, a Python-dict header padded to 64 bytes, raw data. */
export function npy(data: Float32Array, shape: readonly number[]): Buffer {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const unpadded = 10 + dict.length + 1;
  const header = dict + ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const preamble = Buffer.alloc(10);
  preamble.write('\x93NUMPY', 0, 'latin1');
  preamble.writeUInt8(1, 6);
  preamble.writeUInt8(0, 7);
  preamble.writeUInt16LE(header.length, 8);
  return Buffer.concat([preamble, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}
