/**
 * A dataset given as a list instead of a folder: `--data manifest.csv` (header
 * `url_or_path,label[,split]`) or `manifest.jsonl` (one `{"url_or_path", "label", "split"?}`
 * object per line). Local paths are relative to the manifest's folder. http(s) entries are
 * fetched as img2dataset does: a timeout per attempt, retries with exponential backoff for
 * what may pass (network errors, cuts, timeouts, 408/429/5xx), a size limit, and an error
 * per image that leaves the other images alone.
 */
import { parse } from 'csv-parse/sync';
import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError, messageOf } from '../core/errors.js';
import { hasUrlScheme, isHttpUrl } from '../core/urls.js';
import { type Dataset, type DatasetItem, type Split, byCodeUnit } from './dataset.js';

export interface ManifestEntry {
  /** As written in the manifest (the image's name in listings and errors). */
  readonly source: string;
  /** What to read: an http(s) URL, or an absolute path. */
  readonly location: string;
  readonly label: string;
  readonly split: Split | null;
  /** Line of the manifest, for messages. */
  readonly line: number;
}

const COLUMNS = ['url_or_path', 'label', 'split'] as const;
const SPLITS: readonly string[] = ['train', 'val', 'test'];

/** Reads and checks a manifest; every problem is one line naming file, line and field. */
export async function readManifest(file: string): Promise<ManifestEntry[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new UserError(`cannot read manifest ${file} (--data): ${messageOf(error)}`);
  }
  const kind = extname(file).toLowerCase();
  const rows = kind === '.csv' ? csvRows(file, text) : kind === '.jsonl' ? jsonlRows(file, text) : undefined;
  if (!rows) throw new UserError(`manifest ${file} (--data): expected a .csv or .jsonl file`);
  if (rows.length === 0) throw new UserError(`manifest ${file} lists no images`);
  const base = dirname(resolve(file));
  return rows.map(({ line, fields }) => {
    const at = `${file}:${line}`;
    const source = fields.url_or_path;
    const label = fields.label;
    const split = fields.split ?? null;
    if (typeof source !== 'string' || source.trim() === '') throw new UserError(`${at}: url_or_path: expected a URL or path`);
    if (typeof label !== 'string' || label.trim() === '') throw new UserError(`${at}: label: expected a class name`);
    if (split !== null && (typeof split !== 'string' || !(SPLITS.includes(split) || split === ''))) {
      throw new UserError(`${at}: split: expected train, val, test or nothing, got ${JSON.stringify(split)}`);
    }
    if (hasUrlScheme(source) && !isHttpUrl(source)) throw new UserError(`${at}: url_or_path: only http(s) URLs can be fetched: ${source}`);
    return {
      source,
      location: isHttpUrl(source) ? source : resolve(base, source),
      label,
      split: split ? (split as Split) : null,
      line,
    };
  });
}

/** Manifest files end in .csv or .jsonl; anything else given as --data is a dataset folder. */
export const isManifestPath = (path: string): boolean => /\.(csv|jsonl)$/i.test(path);

/**
 * A manifest as a dataset: classes are its labels (alphabetical, as for a folder), items
 * are sorted by how the manifest names them, and each item opens its URL or resolved path.
 * A split column must be filled on every line or on none: a partly split dataset would
 * leave images silently out of every split.
 */
export async function manifestDataset(file: string): Promise<Dataset> {
  const entries = await readManifest(file);
  const seen = new Map<string, number>();
  for (const entry of entries) {
    const first = seen.get(entry.source);
    if (first !== undefined) throw new UserError(`${file}:${entry.line}: url_or_path: ${entry.source} is listed already on line ${first}`);
    seen.set(entry.source, entry.line);
  }
  const withSplit = entries.filter((e) => e.split !== null);
  if (withSplit.length > 0 && withSplit.length < entries.length) {
    const missing = entries.find((e) => e.split === null)!;
    throw new UserError(`${file}:${missing.line}: split: empty, but other lines give one (fill it on every line or on none)`);
  }
  const items: DatasetItem[] = entries
    .map((e) => ({ path: e.source, absolutePath: e.location, label: e.label, split: e.split }))
    .sort((a, b) => byCodeUnit(a.path, b.path));
  return {
    root: resolve(file),
    classes: [...new Set(entries.map((e) => e.label))].sort(byCodeUnit),
    items,
    skipped: { hidden: 0, nonImage: 0, unreadable: 0 },
    splitsFrom: withSplit.length > 0 ? resolve(file) : null,
  };
}

interface RawRow {
  readonly line: number;
  readonly fields: Record<string, unknown>;
}

function csvRows(file: string, text: string): RawRow[] {
  let records: { record: Record<string, string>; info: { lines: number } }[];
  try {
    records = parse(text, {
      columns: (header: string[]) => {
        const names = header.map((h) => h.trim());
        const unknown = names.find((n) => !(COLUMNS as readonly string[]).includes(n));
        if (unknown !== undefined) throw new UserError(`${file}:1: unknown column "${unknown}" (allowed: ${COLUMNS.join(', ')})`);
        for (const required of ['url_or_path', 'label']) {
          if (!names.includes(required)) throw new UserError(`${file}:1: missing column "${required}" (header: ${COLUMNS.join(',')})`);
        }
        return names;
      },
      info: true,
      skip_empty_lines: true,
      trim: true,
      bom: true,
    });
  } catch (error) {
    if (error instanceof UserError) throw error;
    const line = (error as { lines?: number }).lines;
    throw new UserError(`${file}${line ? `:${line}` : ''}: not valid CSV: ${messageOf(error)}`);
  }
  return records.map(({ record, info }) => ({ line: info.lines, fields: record }));
}

function jsonlRows(file: string, text: string): RawRow[] {
  const rows: RawRow[] = [];
  text.split('\n').forEach((raw, index) => {
    if (raw.trim() === '') return;
    const line = index + 1;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      throw new UserError(`${file}:${line}: not valid JSON: ${messageOf(error)}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UserError(`${file}:${line}: expected an object per line`);
    const unknown = Object.keys(value).find((k) => !(COLUMNS as readonly string[]).includes(k));
    if (unknown !== undefined) throw new UserError(`${file}:${line}: unknown field "${unknown}" (allowed: ${COLUMNS.join(', ')})`);
    rows.push({ line, fields: value as Record<string, unknown> });
  });
  return rows;
}

export interface FetchOptions {
  /** Per attempt, headers and body together. */
  readonly timeoutMs?: number;
  /** Attempts after the first, for failures that may pass. */
  readonly retries?: number;
  /** Wait before the first retry; doubled for each next one. */
  readonly backoffMs?: number;
  /** Largest image accepted, in bytes. */
  readonly maxBytes?: number;
}

export const FETCH_DEFAULTS = { timeoutMs: 20_000, retries: 3, backoffMs: 500, maxBytes: 50 * 2 ** 20 } as const;

/** A failure that another attempt will not change. */
class Permanent extends Error {}

/**
 * The bytes of one manifest image (its resolved path or URL). Throws an Error (not a UserError: it belongs to that
 * image alone) whose message says what went wrong, after the retries it deserved.
 */
export async function loadManifestImage(location: string, options: FetchOptions = {}): Promise<Buffer> {
  if (!isHttpUrl(location)) return readFile(location);
  const { timeoutMs, retries, backoffMs, maxBytes } = { ...FETCH_DEFAULTS, ...options };
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetchOnce(location, timeoutMs, maxBytes);
    } catch (error) {
      const message = messageOf(error);
      if (error instanceof Permanent) throw new Error(message);
      if (attempt >= retries) throw new Error(`${message} (${attempt + 1} attempts)`);
      await sleep(backoffMs * 2 ** attempt);
    }
  }
}

async function fetchOnce(url: string, timeoutMs: number, maxBytes: number): Promise<Buffer> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const response = await fetch(url, { redirect: 'follow', signal });
    if (!response.ok) {
      await response.body?.cancel();
      const status = `HTTP ${response.status} ${response.statusText}`.trim();
      const transient = response.status === 408 || response.status === 429 || response.status >= 500;
      throw transient ? new Error(status) : new Permanent(status);
    }
    const type = response.headers.get('content-type') ?? '';
    if (/^(text|application\/(json|xml|xhtml))/i.test(type)) {
      await response.body?.cancel();
      throw new Permanent(`not an image: the server sent ${type.split(';')[0]}`);
    }
    const length = Number(response.headers.get('content-length') ?? NaN);
    if (length > maxBytes) {
      await response.body?.cancel();
      throw new Permanent(`larger than the ${maxBytes}-byte limit (${length} bytes)`);
    }
    const chunks: Uint8Array[] = [];
    let received = 0;
    for await (const chunk of response.body ?? []) {
      received += chunk.length;
      if (received > maxBytes) throw new Permanent(`larger than the ${maxBytes}-byte limit`);
      chunks.push(chunk);
    }
    if (Number.isFinite(length) && received !== length) throw new Error(`connection closed after ${received} of ${length} bytes`);
    if (received === 0) throw new Permanent('empty response');
    return Buffer.concat(chunks);
  } catch (error) {
    if (error instanceof Permanent) throw error;
    if (signal.aborted) throw new Error(`no complete answer within ${timeoutMs} ms`);
    // undici wraps the socket's reason ("other side closed", ECONNREFUSED) in `cause`.
    const cause = (error as { cause?: unknown }).cause;
    throw new Error(cause ? `${messageOf(error)}: ${messageOf(cause)}` : messageOf(error));
  }
}
