/**
 * Every path a command takes, checked before any work starts, so that a wrong one is one
 * line naming the flag (or config field) and nothing is created or changed:
 * `pipeline: --db runs/x: is a directory`. The checks only look (stat, access); the
 * commands still report what goes wrong later (a file that vanishes, a full disk).
 * A FIFO or device is refused everywhere a file is read or written: reading a FIFO waits
 * forever, and an atomic rename onto /dev/null would replace the device.
 */
import { type Stats, accessSync, constants, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { UserError } from '../core/errors.js';
import { isHttpUrl, isPostgresUrl } from '../core/urls.js';
import { isManifestPath } from '../data/manifest.js';

/** Linux' limits: NAME_MAX bytes per path component, PATH_MAX bytes per path. */
const NAME_MAX = 255;
const PATH_MAX = 4096;

const fail = (label: string, path: string, problem: string): never => {
  throw new UserError(`${label} ${path}: ${problem}`);
};

/** What a non-regular, non-folder entry is, in a user's words. */
function kindOf(info: Stats): string {
  if (info.isFIFO()) return 'a FIFO (named pipe)';
  if (info.isCharacterDevice() || info.isBlockDevice()) return 'a device';
  if (info.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** The entry at `path` (following links), undefined when nothing is there; other failures are one line. */
function look(path: string, label: string): Stats | undefined {
  if (Buffer.byteLength(resolve(path)) >= PATH_MAX) fail(label, shorten(path), `path too long (over ${PATH_MAX} bytes)`);
  if (resolve(path).split('/').some((part) => Buffer.byteLength(part) > NAME_MAX)) {
    fail(label, shorten(path), `name too long (a path component over ${NAME_MAX} bytes)`);
  }
  try {
    return statSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ENOTDIR') return fail(label, path, 'a parent in the path is a file, not a folder');
    if (code === 'ELOOP') return fail(label, path, 'too many symbolic links (a loop?)');
    if (code === 'EACCES') return fail(label, path, 'permission denied');
    return fail(label, path, `cannot look at it (${code ?? String(error)})`);
  }
}

/** Very long paths are named by their start and end, so the error stays one readable line. */
const shorten = (path: string) => (path.length > 120 ? `${path.slice(0, 60)}...${path.slice(-40)} (${Buffer.byteLength(path)} bytes)` : path);

function canAccess(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

/** An existing, readable regular file; empty only with `allowEmpty` (a YAML file may hold nothing). */
export function requireInputFile(path: string, label: string, { allowEmpty = false } = {}): void {
  const info = look(path, label);
  if (!info) return fail(label, path, dirExists(path) ? 'no such file' : `no such file (folder ${dirname(path)} does not exist)`);
  if (info.isDirectory()) return fail(label, path, 'is a directory, expected a file');
  if (!info.isFile()) return fail(label, path, `is ${kindOf(info)}, expected a file`);
  if (!canAccess(path, constants.R_OK)) return fail(label, path, 'not readable (permission denied)');
  if (info.size === 0 && !allowEmpty) return fail(label, path, 'is empty');
}

/** An existing, readable folder. */
export function requireInputFolder(path: string, label: string): void {
  const info = look(path, label);
  if (!info) return fail(label, path, 'no such folder');
  if (!info.isDirectory()) return fail(label, path, info.isFile() ? 'is a file, expected a folder' : `is ${kindOf(info)}, expected a folder`);
  if (!canAccess(path, constants.R_OK | constants.X_OK)) return fail(label, path, 'not readable (permission denied)');
}

/** A file to write (replaced if present): its folder exists and is writable; anything already there is a regular file. */
export function requireOutputFile(path: string, label: string): void {
  const info = look(path, label);
  if (info?.isDirectory()) return fail(label, path, 'is a directory, expected a file name');
  if (info && !info.isFile()) return fail(label, path, `is ${kindOf(info)}, not a file to write`);
  const parent = dirname(resolve(path));
  const folder = look(parent, label);
  if (!folder) return fail(label, path, `folder ${dirname(path)} does not exist`);
  if (!folder.isDirectory()) return fail(label, path, `${dirname(path)} is not a folder`);
  if (!canAccess(parent, constants.W_OK)) return fail(label, path, `folder ${dirname(path)} is not writable`);
}

/** A folder to create or fill: a folder if present; otherwise its nearest existing ancestor is a writable folder (missing ones are created). */
export function requireOutputFolder(path: string, label: string): void {
  const info = look(path, label);
  if (info) {
    if (!info.isDirectory()) return fail(label, path, info.isFile() ? 'is a file, expected a folder' : `is ${kindOf(info)}, expected a folder`);
    if (!canAccess(path, constants.W_OK)) return fail(label, path, 'folder is not writable');
    return;
  }
  requireCreatable(resolve(path), path, label);
}

/** How a command uses the cache: `create` makes it if needed (extract), `update` and `read` need one (sweep; the rest). */
export type DatabaseUse = 'create' | 'update' | 'read';

/**
 * The SQLite cache. If it exists it must be a regular file; `read` and `update` need it to
 * exist and hold something (SQLite takes an empty file for a new database, which `create`
 * may do). Whether the bytes are SQLite and writable is checked when it is opened.
 */
export function requireDatabaseFile(path: string, label: string, use: DatabaseUse): void {
  // A server is checked when connecting (one line naming host:port), not as a file.
  if (isPostgresUrl(path)) return;
  const info = look(path, label);
  if (info?.isDirectory()) return fail(label, path, 'is a directory, expected the cache database file');
  if (info && !info.isFile()) return fail(label, path, `is ${kindOf(info)}, expected the cache database file`);
  if (use === 'create') {
    if (!info) requireCreatable(resolve(path), path, label);
    return;
  }
  if (!info) return fail(label, path, 'no cache database here: run `pipeline extract` first');
  if (!canAccess(path, constants.R_OK)) return fail(label, path, 'not readable (permission denied)');
  if (info.size === 0) return fail(label, path, 'is empty, not a cache database: run `pipeline extract` first');
}

/** The folders of a path to create: the nearest existing one must be a writable folder. */
function requireCreatable(absolute: string, path: string, label: string): void {
  for (let dir = dirname(absolute); ; dir = dirname(dir)) {
    const info = look(dir, label);
    if (info) {
      if (!info.isDirectory()) fail(label, path, `${dir} is a file, not a folder`);
      if (!canAccess(dir, constants.W_OK)) fail(label, path, `folder ${dir} is not writable`);
      return;
    }
    if (dirname(dir) === dir) return;
  }
}

function dirExists(path: string): boolean {
  try {
    return statSync(dirname(resolve(path))).isDirectory();
  } catch {
    return false;
  }
}

/** The name of a setting in errors: the flag when it was given, else the config field (and its file). */
function nameOf(flag: string, field: string, flags: Flags, config: ConfiguredPaths): string {
  if (flags[flag] !== undefined) return `--${flag}`;
  return config.file ? `${field} (${basename(config.file)})` : field;
}

/** The parts of the merged configuration (config.ts' PipelineConfig) that name paths. */
export interface ConfiguredPaths {
  readonly file: string | null;
  readonly dataset: { readonly root: string; readonly url: string | null; readonly splits: string | null };
  readonly model: { readonly weights: string };
  readonly cache: { readonly db: string };
}

type Flags = Readonly<Record<string, unknown>>;

/**
 * Checks every path the command in `argv` (yargs' parsed arguments) will use, from the
 * merged configuration and the flags. A dataset root that does not exist but has a
 * download URL is a folder to create.
 */
export function checkCommandPaths(argv: object, config: ConfiguredPaths): void {
  const flags = argv as Flags;
  const command = String((flags._ as unknown[] | undefined)?.[0]);
  const db = () => nameOf('db', 'cache.db', flags, config);
  switch (command) {
    case 'extract': {
      const { root, url, splits } = config.dataset;
      const data = nameOf('data', 'dataset.root', flags, config);
      if (isManifestPath(root)) requireInputFile(root, data);
      else if (url && !look(root, data)) requireOutputFolder(root, data);
      else requireInputFolder(root, data);
      if (splits) requireInputFolder(splits, nameOf('splits', 'dataset.splits', flags, config));
      if (!isHttpUrl(config.model.weights)) requireInputFile(config.model.weights, nameOf('model', 'model.weights', flags, config));
      return requireDatabaseFile(config.cache.db, db(), 'create');
    }
    case 'sweep':
      return requireDatabaseFile(config.cache.db, db(), 'update');
    case 'report':
      requireDatabaseFile(config.cache.db, db(), 'read');
      if (typeof flags.html === 'string') requireOutputFile(flags.html, '--html');
      return;
    case 'export':
      requireDatabaseFile(config.cache.db, db(), 'read');
      if (typeof flags.weights === 'string') requireInputFile(flags.weights, '--weights');
      if (typeof flags.out === 'string') requireOutputFolder(flags.out, '--out');
      return;
    case 'export-features':
      requireDatabaseFile(config.cache.db, db(), 'read');
      if (typeof flags.out === 'string') requireOutputFolder(flags.out, '--out');
      return;
    case 'cache':
      return requireDatabaseFile(config.cache.db, db(), 'read');
    default:
      throw new Error(`no path checks defined for command ${command}`);
  }
}

/**
 * predict's inputs. An image that is missing, a folder, empty or undecodable gets its own
 * error while the rest are still predicted; a FIFO, device or socket is refused up front
 * (reading it would wait forever or never end), as is a --model that is neither an export
 * folder nor its model.json.
 */
export function checkPredictPaths(files: readonly string[], model: string): void {
  for (const file of files) {
    const info = look(file, 'image');
    if (info && !info.isFile() && !info.isDirectory()) fail('image', file, `is ${kindOf(info)}, expected an image file`);
  }
  const info = look(model, '--model');
  if (!info) return fail('--model', model, 'no such folder');
  if (info.isFile() && (basename(model) === 'model.json' || basename(model) === 'model.onnx')) return requireInputFile(model, '--model');
  if (!info.isDirectory()) return fail('--model', model, info.isFile() ? 'is a file, expected the folder written by pipeline export' : `is ${kindOf(info)}, expected a folder`);
}
