/**
 * The one reader of TF.js layers model files: `model.json` and the binary weight shards
 * its manifest lists, from one folder. The backbone's weights (weights.ts) and the
 * exported classifiers that `pipeline predict` loads are both read here, with the same
 * checks and the same one-line errors.
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import type { tf } from '../core/tfjs.js';
import { UserError } from '../core/errors.js';

interface WeightGroup {
  paths: string[];
  weights: tf.io.WeightsManifestEntry[];
}

export interface ModelJson {
  modelTopology?: unknown;
  weightsManifest: WeightGroup[];
  [key: string]: unknown;
}

/** A model.json with the bytes of its shards. */
export interface ModelFiles {
  readonly modelJson: ModelJson;
  /** Every weight's name, shape and type, in manifest order. */
  readonly specs: tf.io.WeightsManifestEntry[];
  /** All shards concatenated in manifest order. */
  readonly bytes: Buffer;
  /** The same bytes in an ArrayBuffer of their own, as tf.io takes them. */
  readonly data: ArrayBuffer;
}

/**
 * Reads `modelPath` (a model.json) and its shards. `source` is what the user gave (a
 * path, a URL, `--model DIR`) and `flag` the option or field it came from: both name
 * the model in errors.
 */
export async function readModelFiles(modelPath: string, source: string, flag: string): Promise<ModelFiles> {
  let text: string;
  try {
    text = await readFile(modelPath, 'utf8');
  } catch {
    throw new UserError(`model file not found: ${modelPath} (${flag})`);
  }
  const modelJson = parseModelJson(text, source);
  const folder = dirname(modelPath);
  const shards: Buffer[] = [];
  for (const shard of modelJson.weightsManifest.flatMap((group) => group.paths)) {
    const shardPath = insideFolder(folder, shard, source);
    try {
      shards.push(await readFile(shardPath));
    } catch {
      throw new UserError(`weight shard missing: ${shardPath} (listed in ${source})`);
    }
  }
  const bytes = Buffer.concat(shards);
  const data = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return { modelJson, specs: modelJson.weightsManifest.flatMap((group) => group.weights), bytes, data };
}

/** model.json's text, checked to be JSON with a weight manifest. */
export function parseModelJson(text: string, source: string): ModelJson {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UserError(`${source} is not a TF.js model.json (not JSON${text.trimStart().startsWith('<') ? ': looks like HTML' : ''})`);
  }
  const manifest = (parsed as ModelJson | null)?.weightsManifest;
  if (!Array.isArray(manifest) || manifest.some((g) => !Array.isArray(g?.paths) || !Array.isArray(g?.weights))) {
    throw new UserError(`${source} is not a TF.js layers model.json (no valid weightsManifest)`);
  }
  return parsed as ModelJson;
}

/** A shard named in model.json, refused if the name would lead outside the model's folder. */
export function insideFolder(folder: string, shard: string, source: string): string {
  const path = resolve(folder, shard);
  if (!path.startsWith(resolve(folder) + sep)) throw new UserError(`${source} names a weight shard outside its folder: ${shard}`);
  return path;
}
