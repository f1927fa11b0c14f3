/**
 * The `pipeline` command line. Each command loads the configuration (defaults < file <
 * flags), calls one stage, and prints what a person needs. A UserError becomes one line
 * on stderr and exit code 1. Stages are imported when their command runs: loading tfjs
 * takes a second that `--help` or `pipeline cache` should not pay.
 */
import yargs, { type Argv } from 'yargs';
import { guardStore, openStore, storeName } from '../cache/store.js';
import { writeFileAtomically } from '../core/files.js';
import { reportText } from '../stages/report/text.js';
import { varyingParameters } from '../stages/sweep/ranking.js';
import { percent, rankingTable } from '../stages/report/tables.js';
import { BACKENDS } from '../backbone/backends.js';
import { type ConfigFlags, type PipelineConfig as Config, loadConfig } from './config.js';
import { UserError } from '../core/errors.js';
import { isPostgresUrl } from '../core/urls.js';
import { selectFeatureSet } from '../stages/feature-set.js';
import { EXIT } from './exit-codes.js';
import { checkCommandPaths, checkPredictPaths } from './paths.js';
import { parseView } from '../data/views.js';
import { onInterrupt } from './interrupt.js';
import { startProgress } from './progress.js';
import { auditCommand } from './audit-command.js';

const integerAtLeast = (least: number, what: string) => (name: string) => (value: unknown) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < least) throw new UserError(`--${name} must be a ${what} integer, got ${JSON.stringify(value)}`);
  return n;
};
const positiveInt = integerAtLeast(1, 'positive');
const nonNegativeInt = integerAtLeast(0, 'non-negative');

/** Flags every command that touches the cache understands. */
function withCacheFlags<T>(args: Argv<T>) {
  return args
    .option('config', { type: 'string', describe: 'YAML config file (default: ./config.yaml if present)' })
    .option('db', { type: 'string', describe: 'SQLite cache file, or postgres://user@host/db to share one server store (cache.db)' });
}

/** Options several commands share, defined once. */
const SWEEP_OPTION = { type: 'string', coerce: positiveInt('sweep'), describe: 'sweep id (default: the latest)' } as const;
const FEATURE_SET_OPTION = { type: 'string', describe: 'feature set id (default: the only one)' } as const;

/** Flags of the extraction engine and input. */
function withExtractFlags<T>(args: Argv<T>) {
  return withCacheFlags(args)
    .option('data', { type: 'string', describe: 'dataset folder (one subfolder per class), or a .csv / .jsonl manifest of url_or_path,label[,split] (dataset.root)' })
    .option('splits', { type: 'string', describe: 'folder with TrashNet-style split lists (dataset.splits)' })
    .option('model', { type: 'string', describe: 'TF.js layers model.json, path or URL (model.weights)' })
    .option('size', { type: 'string', describe: 'input size HxW, or several comma-separated (one feature set each), e.g. 384x512,224x224 (model.size)' })
    .option('views', { type: 'string', describe: 'views to extract, comma-separated: original, hflip, vflip, rot90, rot180, rot270, crop:F:POS (model.views)' })
    .option('resize', { type: 'string', describe: 'fill | cover (model.resize)' })
    .option('backend', { type: 'string', choices: BACKENDS, describe: 'engine (engine.backend)' })
    .option('batch', { type: 'string', coerce: positiveInt('batch'), describe: 'images per engine call (engine.batch)' })
    .option('concurrency', { type: 'string', coerce: positiveInt('concurrency'), describe: 'images decoded at once (engine.concurrency)' })
    .option('fetch-timeout', { type: 'string', coerce: positiveInt('fetch-timeout'), describe: 'seconds per attempt at a manifest URL (dataset.fetch_timeout, default 20)' })
    .option('fetch-retries', { type: 'string', coerce: nonNegativeInt('fetch-retries'), describe: 'retries of a manifest URL that may pass later (dataset.fetch_retries, default 3)' })
    .option('shard-size', { type: 'string', coerce: positiveInt('shard-size'), describe: 'with a postgres:// --db: images per shard (default 1000)' })
    .option('shard-timeout', {
      type: 'string',
      coerce: positiveInt('shard-timeout'),
      describe: 'with a postgres:// --db: seconds a claimed shard may take before another worker gets it (default 900)',
    });
}

const configOf = (argv: ConfigFlags & { config?: string }) => loadConfig(argv.config, argv);

/** A command on the cache, with store failures (read-only, disk full, damaged, server lost) as one line naming the file or server. */
const withCache =
  <A extends ConfigFlags & { config?: string }>(command: (argv: A, config: Config) => unknown) =>
  (argv: A) => {
    // Loaded once per command: every part of the command sees the same configuration.
    const config = configOf(argv);
    checkCommandPaths(argv, config); // every path flag is checked before any work starts
    return guardStore(config.cache.db, async () => {
      await command(argv, config);
    });
  };

const say = (line: string): void => void process.stdout.write(`${line}\n`);
/** Progress notes of a stage: stderr, so stdout stays the command's result. */
const tell = (line: string): void => void process.stderr.write(`${line}\n`);

async function extractCommand(argv: ConfigFlags & { config?: string; 'shard-size'?: number; 'shard-timeout'?: number }, config: Config) {
  for (const flag of ['shard-size', 'shard-timeout'] as const) {
    if (argv[flag] !== undefined && !isPostgresUrl(config.cache.db)) throw new UserError(`--${flag} needs a postgres:// --db (cache.db is ${config.cache.db})`);
  }
  const { runExtract } = await import('../stages/extract.js');
  const interrupt = onInterrupt('stopping after the batches in flight are saved (Ctrl-C again to quit at once)');
  try {
    const summary = await runExtract({
      dataset: config.dataset,
      model: { weights: config.model.weights, size: config.model.sizes, resize: config.model.resize, views: config.model.views },
      db: config.cache.db,
      fetch: config.dataset.fetch,
      shards: { size: argv['shard-size'], timeoutSeconds: argv['shard-timeout'] },
      backend: config.engine.backend,
      batch: config.engine.batch,
      concurrency: config.engine.concurrency,
      shouldStop: interrupt.requested,
      log: tell,
      startProgress,
    });
    const rate = summary.seconds > 0 ? summary.extracted / summary.seconds : 0;
    say(
      `${summary.interrupted ? 'interrupted' : 'done'}: ${summary.images} images, ${summary.cached} already cached, ` +
        `${summary.extracted} extracted in ${summary.seconds.toFixed(1)} s (${rate.toFixed(1)} images/s), ${summary.failures.length} failed`,
    );
    for (const failure of summary.failures.slice(0, 5)) say(`  failed: ${failure.path}: ${failure.error}`);
    if (summary.failures.length > 5) say(`  ... and ${summary.failures.length - 5} more (pipeline cache --failures)`);
    if (summary.cluster) {
      const { shardsDone, progress: p } = summary.cluster;
      say(
        `cluster: ${p.done}/${p.shards} shards done (${shardsDone} by this worker), ${p.running} running, ${p.waiting} waiting, ${p.failed} failed; ` +
          `${p.workersSeen} workers seen in the last minute; this worker ${rate.toFixed(1)} images/s, ` +
          `all workers ${(p.imagesPerSecondSince ?? 0).toFixed(1)} images/s while it ran`,
      );
    }
    for (const set of summary.featureSets) say(`feature set ${set.id} in ${storeName(config.cache.db)} (${set.height}x${set.width}, views ${summary.views.join(', ')})`);
    if (summary.interrupted) {
      say('rerun the same command to extract the rest');
      process.exitCode = EXIT.interrupted;
    }
  } finally {
    interrupt.dispose();
  }
}

async function sweepCommand(argv: { config?: string; db?: string; resume?: boolean; 'feature-set'?: string }, config: Config) {
  const { runSweep, sweepFeatureSet } = await import('../stages/sweep.js');
  const db = await openStore(config.cache.db);
  const interrupt = onInterrupt('stopping: finished runs are saved; `pipeline sweep --resume` continues (Ctrl-C again to quit at once)');
  try {
    const result = await runSweep({
      db,
      featureSet: await sweepFeatureSet(db, argv['feature-set'], config.sweep),
      sweep: config.sweep,
      resume: argv.resume ?? false,
      shouldStop: interrupt.requested,
      log: tell,
    });
    const metric = config.sweep.metric;
    const rows = result.ranking.map((v) => ({ params: v.params, metric: v.metric, testAccuracyMean: v.testAccuracy.mean, seeds: v.seeds.length }));
    if (rows.length > 0) say(rankingTable(rows, varyingParameters(result.ranking), metric, 10));
    const best = result.ranking[0];
    if (best) {
      say(
        `selected by mean ${metric.name}: ${Object.entries(best.params).map(([k, v]) => `${k}=${v}`).join(' ')}\n` +
          `  test accuracy ${percent(best.testAccuracy.mean)} ± ${percent(best.testAccuracy.std)} over ${best.seeds.length} seeds ` +
          `(best seed ${best.bestRun.seed}: ${percent(best.bestRun.testAccuracy)}), macro-F1 ${best.macroF1.mean.toFixed(3)}`,
      );
    }
    const state = result.interrupted ? 'interrupted' : result.alreadyDone ? 'already done' : 'done';
    say(
      `sweep ${result.sweepId} ${state}: ${result.trainedNow} runs trained now, ${result.planned} planned, ` +
        `${result.wallSeconds.toFixed(1)} s of training in total (${result.trainer}), ${result.sessionSeconds.toFixed(1)} s wall now (cache loading included); ` +
        `details: pipeline report --sweep ${result.sweepId}`,
    );
    if (result.interrupted) {
      say('continue with: pipeline sweep --resume (same config)');
      process.exitCode = EXIT.interrupted;
    }
  } finally {
    interrupt.dispose();
    await db.close();
  }
}

async function reportCommand(argv: { config?: string; db?: string; sweep?: number; json?: boolean; html?: string; list?: boolean; top?: number }, config: Config) {
  const db = await openStore(config.cache.db, { readonly: true });
  try {
    if (argv.list) {
      const sweeps = await db.listSweeps();
      if (sweeps.length === 0) return say('no sweeps yet: run `pipeline sweep`');
      for (const s of sweeps) {
        const pinned = s.dataHash === null ? '  (made before sweeps recorded their data: needs a rerun)' : '';
        say(`sweep ${s.id}  ${s.status}  feature set ${s.featureSet}  ${s.plannedRuns} runs  started ${s.startedAt}  ${s.wallSeconds?.toFixed(1) ?? '?'} s${pinned}`);
      }
      return;
    }
    const { chooseSweep, gatherReport, reportAudit } = await import('../stages/report.js');
    const sweep = await chooseSweep(db, argv.sweep);
    const audit = await reportAudit(db, sweep.featureSet);
    const facts = await gatherReport(db, sweep, audit);
    if (argv.html) {
      const { renderHtml } = await import('../stages/report/html.js');
      const html = await renderHtml(facts, { imageRoot: facts.extraction.dataset_root, audit: audit ?? undefined });
      await writeFileAtomically(argv.html, html, '--html');
      say(`wrote ${argv.html}`);
    }
    if (argv.json) say(JSON.stringify(facts, null, 2));
    else if (!argv.html) say(reportText(facts, argv.top ?? 10));
  } finally {
    await db.close();
  }
}

async function exportCommand(
  argv: { config?: string; db?: string; sweep?: number; run?: string; out: string; weights?: string; format?: 'tfjs' | 'onnx' },
  config: Config,
) {
  const db = await openStore(config.cache.db, { readonly: true });
  try {
    const { exportModel } = await import('../stages/export.js');
    const result = await exportModel({ db, sweepId: argv.sweep, run: argv.run ?? 'best', out: argv.out, weights: argv.weights, format: argv.format });
    const m = result.metadata;
    say(`exported run ${m.run_key} of sweep ${m.sweep_id} to ${result.dir} as ${m.model.file} (${result.files.length} files, ${(result.bytes / 1e6).toFixed(1)} MB)`);
    say(`  classes  ${m.labels.join(', ')}`);
    const input = m.model.runtime === 'onnx' ? 'one uint8 HxWx3 image, any size' : `${m.inputs.map((i) => `${i.name} ${i.height}x${i.width}`).join(', ')} RGB 0..255`;
    say(`  input    ${input}; sizes ${m.sizes.join(', ')}, resize ${m.resize}; ${m.preprocessing.formula}${m.standardize ? ' and the standardisation are' : ' is'} inside the model`);
    say(`  views    ${m.views.join(', ')}: probabilities averaged ${m.views_in_model ? 'inside the model' : 'over one row per view (pipeline predict does it)'}`);
    say(
      `  metrics  val acc ${percent(m.metrics.val_accuracy)}  test acc ${percent(m.metrics.test_accuracy)}  macro-F1 ${m.metrics.macro_f1.toFixed(3)}`,
    );
  } finally {
    await db.close();
  }
}

async function predictCommand(argv: { files: string[]; model: string; json?: boolean; top?: number }) {
  checkPredictPaths(argv.files, argv.model);
  const { predictFiles } = await import('../stages/predict.js');
  const result = await predictFiles(argv.files, argv.model, { top: argv.top ?? 3 });
  const failed = result.predictions.filter((p) => !p.ok).length;
  if (argv.json) {
    say(JSON.stringify({ model: result.modelDir, labels: result.metadata.labels, predictions: result.predictions }, null, 2));
  } else {
    const width = Math.max(...result.predictions.map((p) => p.file.length));
    for (const p of result.predictions) {
      const detail = p.ok ? p.top.map((c) => `${c.label} ${percent(c.probability)}`).join('   ') : `error: ${p.error}`;
      say(`${p.file.padEnd(width)}   ${detail}`);
    }
    say(`${result.predictions.length - failed} predicted, ${failed} failed (model ${result.modelDir}, ${result.backend})`);
  }
  // Every readable file was still predicted; the exit code tells scripts that some were not.
  if (failed > 0) process.exitCode = EXIT.someInputsFailed;
}

async function cacheCommand(argv: { config?: string; db?: string; failures?: boolean; 'feature-set'?: string }, config: Config) {
  const db = await openStore(config.cache.db, { readonly: true });
  try {
    const { describeCache } = await import('../stages/cache.js');
    const failures = argv.failures ? { featureSet: argv['feature-set'] } : undefined;
    for (const line of await describeCache(db, storeName(config.cache.db), { failures })) say(line);
  } finally {
    await db.close();
  }
}

async function exportFeaturesCommand(argv: { config?: string; db?: string; out: string; 'feature-set'?: string; view?: string }, config: Config) {
  const db = await openStore(config.cache.db, { readonly: true });
  try {
    const set = await selectFeatureSet(db, argv['feature-set']);
    const { exportFeatures } = await import('../stages/export-features.js');
    const view = parseView(argv.view ?? 'original');
    if (typeof view === 'string') throw new UserError(`--view: ${view}`);
    const result = await exportFeatures(db, set, argv.out, view.name);
    say(`wrote ${result.rows} x ${result.dim} features of ${set.id} (view ${view.name}): ${result.files.join(', ')}`);
  } finally {
    await db.close();
  }
}

/** Arguments that are lists by design; every other flag given twice keeps its last value. */
const LIST_ARGUMENTS = new Set(['_', '$0', 'files']);

function lastValueOfRepeatedFlags(argv: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(argv)) {
    if (!LIST_ARGUMENTS.has(key) && Array.isArray(value)) argv[key] = value.at(-1);
  }
}

export function buildCli(args: string[]) {
  return yargs(args)
    // A repeated flag means its last value, as in most command-line tools, never an array.
    .middleware(lastValueOfRepeatedFlags, true)
    .scriptName('pipeline')
    .usage('$0 <command> [options]\n\nTransfer learning with cached embeddings: extract once, sweep heads in seconds.')
    .command('extract', 'run the frozen MobileNetV2 once and cache its features in SQLite', withExtractFlags, withCache(extractCommand))
    .command(
      'sweep',
      'train many dense-head variants from the cached features',
      (a) =>
        withCacheFlags(a)
          .option('feature-set', FEATURE_SET_OPTION)
          .option('resume', { type: 'boolean', describe: 'continue the interrupted sweep with this configuration' }),
      withCache(sweepCommand),
    )
    .command(
      'report',
      'show which head variant won, and why',
      (a) =>
        withCacheFlags(a)
          .option('sweep', SWEEP_OPTION)
          .option('list', { type: 'boolean', describe: 'list the sweeps' })
          .option('json', { type: 'boolean', describe: 'print the facts as JSON (fields in README)' })
          .option('html', { type: 'string', describe: 'write a self-contained HTML report with plots to this file' })
          .option('top', { type: 'string', coerce: positiveInt('top'), describe: 'variants to list (default 10)' }),
      withCache(reportCommand),
    )
    .command(
      'export',
      'write a trained head joined to the backbone as a TF.js layers model or one ONNX model',
      (a) =>
        withCacheFlags(a)
          .option('sweep', SWEEP_OPTION)
          .option('run', { type: 'string', describe: 'run key, or best (default): the best seed of the winning variant' })
          .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
          .option('format', { type: 'string', choices: ['tfjs', 'onnx'] as const, describe: 'tfjs (default): TF.js layers model; onnx: one model.onnx, image in, probabilities out' })
          .option('weights', { type: 'string', describe: 'backbone model.json, if it moved since extraction (hash-checked)' }),
      withCache(exportCommand),
    )
    .command(
      'predict <files..>',
      'classify images with an exported model',
      (a) =>
        a
          .positional('files', { type: 'string', array: true, demandOption: true, describe: 'image files' })
          .option('model', { type: 'string', demandOption: true, describe: 'folder written by pipeline export (TF.js or ONNX)' })
          .option('json', { type: 'boolean', describe: 'print JSON' })
          .option('top', { type: 'string', coerce: positiveInt('top'), describe: 'classes per image (default 3)' }),
      (argv) => predictCommand({ ...argv, files: argv.files ?? [] }),
    )
    .command(
      'cache',
      'list the feature sets in the cache',
      (a) =>
        withCacheFlags(a)
          .option('failures', { type: 'boolean', describe: 'also list the files that failed' })
          .option('feature-set', { type: 'string', describe: 'feature set id (with --failures)' }),
      withCache(cacheCommand),
    )
    .command(
      'export-features',
      'write features.npy and index.csv for use from Python',
      (a) =>
        withCacheFlags(a)
          .option('out', { type: 'string', demandOption: true, describe: 'output folder' })
          .option('feature-set', FEATURE_SET_OPTION)
          .option('view', { type: 'string', describe: 'which view\'s vectors (default: original)' }),
      withCache(exportFeaturesCommand),
    )
    .command(auditCommand)
    .demandCommand(1, 'name a command: extract, sweep, report, export, predict, cache, export-features, audit')
    .strict()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      // yargs rewraps errors thrown in `coerce` as YError; its own messages span lines.
      if (error && error.name !== 'YError') throw error;
      throw new UserError(oneLine(error?.message ?? message));
    });
}

const oneLine = (text: string) =>
  text
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .join(' ');

export async function main(args: string[]): Promise<number> {
  try {
    await buildCli(args).parseAsync();
    return Number(process.exitCode ?? EXIT.ok);
  } catch (error) {
    if (error instanceof UserError) {
      process.stderr.write(`pipeline: ${error.message}\n`);
      return EXIT.userError;
    }
    process.stderr.write(`pipeline: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
    return EXIT.bug;
  }
}
