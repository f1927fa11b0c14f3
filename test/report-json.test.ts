/**
 * `pipeline report --json` is read by scripts, so its field names are a contract: every
 * key at every depth is snake_case (README, "pipeline report --json"). Through the real
 * CLI on generated images and a random backbone, with a sweep whose variants differ in
 * several parameters and a hidden layer, so that every part of the report is filled.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { makeDataset } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { runPipeline } from './helpers/cli.js';
import { tempDir } from './helpers/shared.js';

/** Every object key under `value` that is not snake_case (lowercase letters, digits, `_`), as a path like `best.curves.trainLoss`. */
function nonSnakeKeys(value: unknown, path = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((item, i) => nonSnakeKeys(item, `${path}[${i}]`));
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, child]) => {
    const at = path ? `${path}.${key}` : key;
    return [...(/^[a-z][a-z0-9_]*$/.test(key) ? [] : [at]), ...nonSnakeKeys(child, at)];
  });
}

test('report --json: every key at every depth is snake_case', async (t) => {
  const cwd = tempDir(t);
  await makeDataset(join(cwd, 'data'), { classes: ['alpha', 'bravo', 'charlie'], perClass: 10 });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 7 });
  await writeFile(join(cwd, 'config.yaml'), `sweep:
  seeds: [1, 2]
  early_stopping: {monitor: val_loss, patience: 0}
  parameters:
    dropout: {values: [0, 0.2]}
    learning_rate: {values: [0.01, 0.003]}
    hidden_units: {value: 8}
    class_weight: {value: balanced}
    epochs: {value: 3}
`);
  const run = async (args: readonly string[]) => {
    const result = await runPipeline(cwd, args);
    t.is(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
    return result;
  };
  await run(['extract', '--data', 'data', '--model', modelJson, '--size', '32x32', '--backend', 'wasm', '--db', 'c.sqlite']);
  await run(['sweep', '--db', 'c.sqlite']);
  const report = JSON.parse((await run(['report', '--db', 'c.sqlite', '--json'])).stdout) as {
    best: { curves: Record<string, number[]>; params: Record<string, unknown>; per_class: unknown[] };
    variants: unknown[];
    runs: unknown[];
  };
  // The walk must have met the nested parts, or an empty report would pass.
  t.deepEqual(Object.keys(report.best.curves).sort(), ['train_accuracy', 'train_loss', 'val_accuracy', 'val_loss']);
  t.is(report.best.curves.val_loss.length, 3);
  t.true('hidden_units' in report.best.params && 'class_weight' in report.best.params);
  t.is(report.best.per_class.length, 3);
  t.is(report.variants.length, 4);
  t.is(report.runs.length, 8);
  t.deepEqual(nonSnakeKeys(report), []);
});
