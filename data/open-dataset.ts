/**
 * Where a command's images come from: a folder with one subfolder per class
 * (data/dataset.ts), or a manifest listing paths and http(s) URLs (data/manifest.ts).
 * Stages ask here, so both kinds read the same way.
 */
import { readFile } from 'node:fs/promises';
import { UserError } from '../core/errors.js';
import { isHttpUrl } from '../core/urls.js';
import { type Dataset, type DatasetItem, scanDataset } from './dataset.js';
import { type FetchOptions, isManifestPath, loadManifestImage, manifestDataset } from './manifest.js';

export async function openDataset(location: string, splitsDir?: string): Promise<Dataset> {
  if (!isManifestPath(location)) return scanDataset(location, splitsDir);
  if (splitsDir) throw new UserError(`--splits / dataset.splits: a manifest (${location}) gives its splits in its own split column`);
  return manifestDataset(location);
}

/** An item fetched over the network rather than read from a file. */
export const isRemote = (item: DatasetItem): item is DatasetItem & { absolutePath: string } =>
  typeof item.absolutePath === 'string' && isHttpUrl(item.absolutePath);

/** The bytes of an item: its file, or its URL fetched with timeouts, retries and a size limit. */
export function readImageBytes(item: DatasetItem, fetch: FetchOptions = {}): Promise<Buffer> {
  return isRemote(item) ? loadManifestImage(item.absolutePath, fetch) : readFile(item.absolutePath);
}
