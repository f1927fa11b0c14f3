/**
 * The `sweep:` section of config.yaml, modelled on Weights & Biases sweep files:
 * each parameter is `{value}`, `{values: [...]}` or `{distribution, min, max}`.
 */
import { z } from 'zod';
import { formatSize, parseSize } from '../../backbone/preprocessing.js';
import { type View, parseViews } from '../../data/views.js';

const continuous = (name: string, check: (v: number) => boolean, rule: string) =>
  z.number().refine(check, { message: `${name} must be ${rule}` });

/** A list of cached view names, canonical (`crop:0.80:tl` -> `crop:0.8:tl`), each once; view 0 is the one scored alone. */
const viewList = z
  .array(z.string())
  .superRefine((names, ctx) => {
    const views = parseViews(names);
    if (typeof views === 'string') ctx.addIssue({ code: 'custom', message: views });
  })
  .transform((names) => (parseViews(names) as View[]).map((view) => view.name));

/** A list of cached input sizes `HxW`, each once, whose features are concatenated in this order. */
const sizeList = z
  .array(z.string())
  .superRefine((texts, ctx) => {
    if (texts.length === 0) return ctx.addIssue({ code: 'custom', message: 'at least one size is needed' });
    const bad = texts.find((text) => parseSize(text) === undefined);
    if (bad !== undefined) return ctx.addIssue({ code: 'custom', message: `size "${bad}": expected HxW with both sides 32..4096, like 448x597` });
    const names = texts.map((text) => formatSize(parseSize(text)!));
    const twice = names.find((name, i) => names.indexOf(name) !== i);
    if (twice) ctx.addIssue({ code: 'custom', message: `size ${twice} listed twice` });
  })
  .transform((texts) => texts.map((text) => formatSize(parseSize(text)!)));

/** Every head parameter a sweep can vary, with the values it accepts. */
export const PARAMETER_VALUES = {
  dropout: continuous('dropout', (v) => v >= 0 && v < 1, '>= 0 and < 1'),
  learning_rate: continuous('learning_rate', (v) => v > 0 && v < 10, '> 0 and < 10'),
  epochs: z.number().int().min(1).max(10000),
  batch_size: z.number().int().min(1).max(65536),
  optimizer: z.enum(['adam', 'sgd', 'rmsprop']),
  // The trainer's SIMD kernels work in blocks of 8 units.
  hidden_units: z.number().int().min(0).max(65536).refine((v) => v % 8 === 0, { message: 'hidden_units must be a multiple of 8 (0 = no hidden layer)' }),
  weight_decay: continuous('weight_decay', (v) => v >= 0 && v < 1, '>= 0 and < 1'),
  label_smoothing: continuous('label_smoothing', (v) => v >= 0 && v < 1, '>= 0 and < 1'),
  class_weight: z.enum(['none', 'balanced']),
  // What the head sees: the cached views it trains on and averages over at val/test, the
  // cached sizes concatenated side by side, and a z-score with train statistics.
  views: viewList,
  sizes: sizeList,
  standardize: z.boolean(),
} as const;

export type ParameterName = keyof typeof PARAMETER_VALUES;
export const PARAMETER_NAMES = Object.keys(PARAMETER_VALUES) as ParameterName[];

/** Parameters that take real values, so a random sweep may draw them from a distribution. */
const CONTINUOUS: readonly ParameterName[] = ['dropout', 'learning_rate', 'weight_decay', 'label_smoothing'];

export type ParameterValue = number | string | boolean | string[];
export type ParameterSpec =
  | { value: ParameterValue }
  | { values: ParameterValue[] }
  | { distribution: 'uniform' | 'log_uniform'; min: number; max: number };

function parameterSpec(name: ParameterName): z.ZodType<ParameterSpec> {
  const value = PARAMETER_VALUES[name] as z.ZodType<ParameterValue>;
  const options: z.ZodType<ParameterSpec>[] = [
    z.object({ value }).strict(),
    z.object({ values: z.array(value).min(1) }).strict(),
  ];
  if (CONTINUOUS.includes(name)) {
    options.push(
      z
        .object({ distribution: z.enum(['uniform', 'log_uniform']), min: value as z.ZodType<number>, max: value as z.ZodType<number> })
        .strict()
        .refine((d) => d.min < d.max, { message: 'min must be below max' })
        .refine((d) => d.distribution !== 'log_uniform' || d.min > 0, { message: 'log_uniform needs min > 0' }),
    );
  }
  return z.union(options as [z.ZodType<ParameterSpec>, z.ZodType<ParameterSpec>, ...z.ZodType<ParameterSpec>[]]);
}

export const DEFAULT_PARAMETERS: Record<ParameterName, ParameterSpec> = {
  dropout: { values: [0.0, 0.2, 0.4, 0.6] },
  learning_rate: { values: [0.0003, 0.001, 0.003, 0.01] },
  epochs: { value: 50 },
  batch_size: { value: 32 },
  optimizer: { value: 'adam' },
  hidden_units: { value: 0 },
  weight_decay: { value: 0 },
  label_smoothing: { value: 0 },
  class_weight: { value: 'none' },
  views: { value: ['original'] },
  // No default list: a sweep without `sizes` uses its feature set's own size (stages/sweep.ts).
  sizes: { value: [] },
  standardize: { value: false },
};

export const SweepSchema = z
  .object({
    method: z.enum(['grid', 'random']).default('grid'),
    runs: z.number().int().min(1).max(10000).optional(),
    seed: z.number().int().min(0).default(0),
    metric: z
      .object({ name: z.enum(['val_accuracy', 'val_loss']), goal: z.enum(['maximize', 'minimize']) })
      .strict()
      .refine((m) => (m.name === 'val_loss') === (m.goal === 'minimize'), {
        message: 'val_accuracy is maximized and val_loss minimized',
      })
      .default({ name: 'val_accuracy', goal: 'maximize' }),
    seeds: z.array(z.number().int().min(0)).min(1).default([1, 2, 3]),
    early_stopping: z
      .object({ monitor: z.enum(['val_loss', 'val_accuracy']), patience: z.number().int().min(0) })
      .strict()
      .default({ monitor: 'val_loss', patience: 5 }),
    parameters: z
      .object(Object.fromEntries(PARAMETER_NAMES.map((name) => [name, parameterSpec(name).optional()])) as unknown as {
        [K in ParameterName]: z.ZodOptional<z.ZodType<ParameterSpec>>;
      })
      .strict()
      .default({}),
  })
  .strict()
  .superRefine((sweep, ctx) => {
    if (sweep.method === 'random' && sweep.runs === undefined) {
      ctx.addIssue({ code: 'custom', path: ['runs'], message: 'method random needs `runs: N`' });
    }
    if (sweep.method === 'grid') {
      for (const [name, spec] of Object.entries(sweep.parameters)) {
        if (spec && 'distribution' in spec) {
          ctx.addIssue({
            code: 'custom',
            path: ['parameters', name],
            message: 'a grid cannot enumerate a distribution: use values: [...] or method: random',
          });
        }
      }
    }
  })
  .transform((sweep) => ({ ...sweep, parameters: { ...DEFAULT_PARAMETERS, ...definedOnly(sweep.parameters) } }));

function definedOnly<T extends object>(record: T): Partial<T> {
  return Object.fromEntries(Object.entries(record).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export type SweepConfig = z.output<typeof SweepSchema>;
