/**
 * From the `sweep:` config to the list of runs: a grid is the cartesian product of every
 * parameter's values; a random sweep draws `runs` variants (seeded). Each variant is
 * trained once per seed.
 */
import seedrandom from 'seedrandom';
import {
  PARAMETER_NAMES,
  type ParameterName,
  type ParameterSpec,
  type ParameterValue,
  type SweepConfig,
} from './config.js';
import type { HeadParams } from './types.js';

export type Variant = Record<ParameterName, ParameterValue>;

export interface PlannedRun {
  /** Stable identity of the variant: its parameters as canonical JSON. */
  readonly variantKey: string;
  readonly runKey: string;
  readonly variant: Variant;
  readonly seed: number;
}

export function planVariants(sweep: SweepConfig): Variant[] {
  const specs = sweep.parameters as Record<ParameterName, ParameterSpec>;
  if (sweep.method === 'grid') {
    return PARAMETER_NAMES.reduce<Variant[]>(
      (variants, name) => variants.flatMap((v) => choices(specs[name]).map((value) => ({ ...v, [name]: value }))),
      [{} as Variant],
    );
  }
  const random = seedrandom(`sweep:${sweep.seed}`);
  return Array.from({ length: sweep.runs! }, () =>
    Object.fromEntries(PARAMETER_NAMES.map((name) => [name, draw(specs[name], random)])) as Variant,
  );
}

export function planRuns(sweep: SweepConfig): PlannedRun[] {
  return planVariants(sweep).flatMap((variant) => {
    const variantKey = JSON.stringify(variant, PARAMETER_NAMES);
    return sweep.seeds.map((seed) => ({ variantKey, runKey: `${variantKey}#${seed}`, variant, seed }));
  });
}

/** A planned run's variant as the trainer takes it. */
export function headParams(run: PlannedRun): HeadParams {
  const v = run.variant;
  return {
    dropout: v.dropout as number,
    learningRate: v.learning_rate as number,
    epochs: v.epochs as number,
    batchSize: v.batch_size as number,
    optimizer: v.optimizer as HeadParams['optimizer'],
    hiddenUnits: v.hidden_units as number,
    weightDecay: v.weight_decay as number,
    labelSmoothing: v.label_smoothing as number,
    classWeight: v.class_weight as HeadParams['classWeight'],
  };
}

function choices(spec: ParameterSpec): ParameterValue[] {
  if ('value' in spec) return [spec.value];
  if ('values' in spec) return spec.values;
  throw new Error('a grid cannot enumerate a distribution'); // rejected by the config schema already
}

function draw(spec: ParameterSpec, random: () => number): ParameterValue {
  if ('value' in spec) return spec.value;
  if ('values' in spec) return spec.values[Math.floor(random() * spec.values.length)];
  const u = random();
  return spec.distribution === 'uniform'
    ? spec.min + u * (spec.max - spec.min)
    : Math.exp(Math.log(spec.min) + u * (Math.log(spec.max) - Math.log(spec.min)));
}
