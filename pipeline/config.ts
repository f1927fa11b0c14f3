/**
 * Configuration: built-in defaults, overridden by the YAML file, overridden by flags.
 * A file may hold only the sections it needs. Every error names the field and, for the
 * file, its line and column: `config.yaml:7:11: model.size: ...`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, isMap, isPair, isScalar, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { type InputSize, RESIZE_MODES, type ResizeMode, parseSize } from '../backbone/preprocessing.js';
import { BACKENDS, type BackendRequest } from '../backbone/backends.js';
import { UserError } from '../core/errors.js';
import { requireInputFile } from './paths.js';
import { type View, parseViews } from '../data/views.js';
import { FETCH_DEFAULTS } from '../data/manifest.js';
import { isHttpUrl, isPostgresUrl } from '../core/urls.js';
import { type SweepConfig, SweepSchema } from '../stages/sweep/config.js';
import { type AuditConfig, AuditSchema } from '../stages/audit/config.js';

/** Google's hosted Keras MobileNetV2 (alpha 1.0, no top) as a TF.js layers model. */
export const DEFAULT_MODEL_URL =
  'https://storage.googleapis.com/teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.00_224_no_top/model.json';
/** TrashNet's resized images, as published in the dataset's own repository. */
export const DEFAULT_DATASET_URL = 'https://github.com/garythung/trashnet/raw/master/data/dataset-resized.zip';

const sizeField = z.string().refine((s) => parseSize(s) !== undefined, {
  message: 'expected HxW with both sides 32..4096, like 224x224 or 384x512',
});
/** One size or a list (one feature set each); a flag gives the list comma-separated. */
const sizesField = z.union([sizeField, z.array(sizeField).min(1)]);
const viewsField = z.array(z.string()).superRefine((names, ctx) => {
  const views = parseViews(names);
  if (typeof views === 'string') ctx.addIssue({ code: 'custom', message: views });
});
const listFlag = (text: string) => text.split(',').map((part) => part.trim());

const FileSchema = z
  .object({
    dataset: z
      .object({
        root: z.string().min(1),
        url: z.url({ protocol: /^https?$/ }).nullable(),
        sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'expected 64 hex digits').nullable(),
        splits: z.string().min(1).nullable(),
        fetch_timeout: z.number().positive().max(3600),
        fetch_retries: z.number().int().min(0).max(20),
      })
      .strict()
      .partial(),
    model: z.object({ weights: z.string().min(1), size: sizesField, resize: z.enum(RESIZE_MODES), views: viewsField }).strict().partial(),
    cache: z.object({ db: z.string().min(1) }).strict().partial(),
    engine: z
      .object({
        backend: z.enum(BACKENDS),
        batch: z.number().int().min(1).max(256),
        concurrency: z.number().int().min(1).max(64),
      })
      .strict()
      .partial(),
    sweep: z.unknown(),
    audit: z.unknown(),
  })
  .strict()
  .partial();

type FileConfig = z.output<typeof FileSchema>;

export interface PipelineConfig {
  /** The file the settings came from, if any. */
  readonly file: string | null;
  /** `root`: a folder or a .csv / .jsonl manifest; `fetch`: how a manifest's URLs are fetched. */
  readonly dataset: {
    root: string;
    url: string | null;
    sha256: string | null;
    splits: string | null;
    fetch: { timeoutMs: number; retries: number };
  };
  /** `size` is the first of `sizes`. */
  readonly model: { weights: string; size: InputSize; sizes: InputSize[]; resize: ResizeMode; views: string[] };
  readonly cache: { db: string };
  readonly engine: { backend: BackendRequest; batch: number; concurrency: number };
  readonly sweep: SweepConfig;
  /** `pipeline audit`'s settings (stages/audit/config.ts); its flags override them in audit-command.ts. */
  readonly audit: AuditConfig;
}

/** Command-line flags that override the file (undefined = not given). */
export interface ConfigFlags {
  data?: string;
  splits?: string;
  /** Seconds per attempt at a manifest URL. */
  'fetch-timeout'?: number;
  'fetch-retries'?: number;
  model?: string;
  size?: string;
  views?: string;
  resize?: string;
  db?: string;
  backend?: string;
  batch?: number;
  concurrency?: number;
}

const DEFAULTS = {
  dataset: {
    root: 'data/trashnet',
    url: DEFAULT_DATASET_URL,
    sha256: null,
    splits: null,
    fetch_timeout: FETCH_DEFAULTS.timeoutMs / 1000,
    fetch_retries: FETCH_DEFAULTS.retries as number,
  },
  model: { weights: DEFAULT_MODEL_URL, size: '384x512' as string | string[], resize: 'fill' as ResizeMode, views: ['original'] },
  cache: { db: 'runs/pipeline.sqlite' },
  engine: { backend: 'auto' as BackendRequest, batch: 8, concurrency: 4 },
};

/**
 * Loads the configuration. `configPath` undefined means ./config.yaml if it exists, else
 * the built-in defaults. Relative paths in the file are relative to the file's folder;
 * relative paths in flags are relative to the working directory.
 */
export function loadConfig(configPath: string | undefined, flags: ConfigFlags = {}): PipelineConfig {
  const file = configPath ?? (existsSync('config.yaml') ? 'config.yaml' : undefined);
  if (file) requireInputFile(file, configPath === undefined ? 'config file' : '--config', { allowEmpty: true });
  const fromFile = file ? readConfigFile(file) : {};
  const base = file ? dirname(resolve(file)) : process.cwd();
  const inFile = (path: string) => (isHttpUrl(path) || isAbsolute(path) ? path : resolve(base, path));
  const fromCwd = (path: string) => (isHttpUrl(path) ? path : resolve(path));

  const dataset = { ...DEFAULTS.dataset, ...fromFile.dataset };
  const model = { ...DEFAULTS.model, ...fromFile.model };
  const sizes = (flags.size !== undefined ? flag('--size', listFlag(flags.size), z.array(sizeField)) ?? [] : [model.size].flat()).map((s) => parseSize(s)!);
  const views = flags.views !== undefined ? flag('--views', listFlag(flags.views), viewsField)! : model.views;
  const cache = { ...DEFAULTS.cache, ...fromFile.cache };
  const engine = { ...DEFAULTS.engine, ...fromFile.engine };
  const sweep = parseSection(SweepSchema, fromFile.sweep ?? {}, file, 'sweep');
  const audit = parseSection(AuditSchema, fromFile.audit ?? {}, file, 'audit');

  return {
    file: file ? resolve(file) : null,
    dataset: {
      root: flags.data ? fromCwd(flags.data) : inFile(dataset.root),
      url: datasetUrl(fromFile.dataset, flags),
      sha256: dataset.sha256?.toLowerCase() ?? null,
      splits: flags.splits ? fromCwd(flags.splits) : dataset.splits ? inFile(dataset.splits) : null,
      fetch: { timeoutMs: (flags['fetch-timeout'] ?? dataset.fetch_timeout) * 1000, retries: flags['fetch-retries'] ?? dataset.fetch_retries },
    },
    model: {
      weights: flags.model ? fromCwd(flags.model) : inFile(model.weights),
      size: sizes[0],
      sizes,
      views: views.map((name) => (parseViews([name]) as View[])[0].name),
      resize: flag('--resize', flags.resize, z.enum(RESIZE_MODES)) ?? model.resize,
    },
    // A server URL is kept as given; a file is resolved like every other path.
    cache: { db: isPostgresUrl(flags.db ?? cache.db) ? (flags.db ?? cache.db) : flags.db ? fromCwd(flags.db) : inFile(cache.db) },
    engine: {
      backend: flag('--backend', flags.backend, z.enum(BACKENDS)) ?? engine.backend,
      batch: flags.batch ?? engine.batch,
      concurrency: flags.concurrency ?? engine.concurrency,
    },
    sweep,
    audit,
  };
}

/**
 * The download URL applies to the root it came with: the default URL to the default
 * root, a URL in the file to the file's root. Never download TrashNet into a folder the
 * user named without a URL.
 */
function datasetUrl(fromFile: FileConfig['dataset'], flags: ConfigFlags): string | null {
  if (flags.data) return null;
  if (fromFile?.url !== undefined) return fromFile.url;
  return fromFile?.root ? null : DEFAULTS.dataset.url;
}

function flag<T>(name: string, value: string | string[] | undefined, schema: z.ZodType<T>): T | undefined {
  if (value === undefined) return undefined;
  const result = schema.safeParse(value);
  if (!result.success) throw new UserError(`${name} ${JSON.stringify(Array.isArray(value) ? value.join(',') : value)}: ${result.error.issues[0].message}`);
  return result.data;
}

function readConfigFile(file: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`config file not found: ${file} (--config)`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = lines.linePos(syntax.pos[0]);
    throw new UserError(`${file}:${pos.line}:${pos.col}: invalid YAML: ${syntax.message.split('\n')[0]}`);
  }
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new UserError(`${file}: expected a mapping of sections at the top level`);
  fileDocuments.set(file, { doc, lines });
  return parseSection(FileSchema, raw, file, '');
}

/** Parsed documents, so a section validated later can still point at its line. */
const fileDocuments = new Map<string, { doc: Document; lines: LineCounter }>();

function parseSection<S extends z.ZodType>(schema: S, value: unknown, file: string | undefined, section: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = [...(section ? [section] : []), ...issue.path.map(String)];
  const unknownKey = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
  const fieldPath = unknownKey ? [...path, unknownKey] : path;
  const message = unknownKey ? `unknown key (allowed: ${allowedKeys(schema, issue.path.map(String))})` : issue.message;
  const where = file ? `${file}:${locate(file, fieldPath, unknownKey !== undefined)}` : 'config';
  throw new UserError(`${where}: ${fieldPath.join('.') || '(top level)'}: ${message}`);
}

function allowedKeys(schema: z.ZodType, path: string[]): string {
  let node: unknown = schema;
  for (const key of [...path]) node = unwrap(node)?.shape?.[key];
  const shape = unwrap(node)?.shape;
  return shape ? Object.keys(shape).join(', ') : '?';
}

/** Digs through Zod wrappers (optional, default, pipe/transform) to an object schema. */
function unwrap(schema: unknown): { shape?: Record<string, unknown> } | undefined {
  let current = schema as { def?: { innerType?: unknown; in?: unknown; schema?: unknown }; shape?: Record<string, unknown> } | undefined;
  for (let i = 0; i < 8 && current && !current.shape; i++) {
    current = (current.def?.innerType ?? current.def?.in ?? current.def?.schema) as typeof current;
  }
  return current;
}

/** "line:col" of a field in the YAML (the key for unknown keys, else the value). */
function locate(file: string, path: string[], atKey: boolean): string {
  const parsed = fileDocuments.get(file);
  if (!parsed) return '1:1';
  let node: unknown = parsed.doc.contents;
  let offset = 0;
  for (const key of path) {
    if (!isMap(node)) break;
    const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && String(item.key.value) === key);
    if (!pair || !isPair(pair)) break;
    const keyRange = (pair.key as { range?: [number, number, number] }).range;
    const valueRange = (pair.value as { range?: [number, number, number] } | null)?.range;
    offset = (atKey || !valueRange ? keyRange?.[0] : valueRange[0]) ?? offset;
    node = pair.value;
  }
  const pos = parsed.lines.linePos(offset);
  return `${pos.line}:${pos.col}`;
}
