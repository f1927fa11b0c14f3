/**
 * A stack of dense heads sharing one WebAssembly memory: the training rows, one scratch
 * area for the step being computed, and per run its parameters, gradients and optimizer
 * slots. A training step of one run is gather -> dropout -> dense (-> relu -> dropout ->
 * dense) -> softmax cross-entropy -> backward -> optimizer update, all in the SIMD kernels
 * except the [rows, classes]-sized softmax, which is cheap in JavaScript.
 */
import { dropoutThreshold, glorotUniform, runStreams, type RandomStream } from './random.js';
import { instantiateKernels, type Kernels } from './simd.js';
import type { HeadParams, RunSpec } from './trainer.js';

const BETA1 = 0.9;
const BETA2 = 0.999;
const RMSPROP_RHO = 0.9;
/** tfjs' backend epsilon, the default of its optimizers; Keras also defaults to 1e-7. */
export const EPSILON = 1e-7;

export interface StackShape { dim: number; hiddenUnits: number; classes: number; batchSize: number; optimizer: HeadParams['optimizer'] }

/** One dense layer inside a run's parameter block (offsets in floats). */
interface Layer { inputs: number; units: number; kernel: number; bias: number }

interface ParamLayout { layers: Layer[]; kernelFloats: number; floats: number }

const roundUp = (value: number, multiple: number) => Math.ceil(value / multiple) * multiple;

/** Kernels first, then biases (each padded to 4 floats): L2 applies to the kernel range only. */
function paramLayout({ dim, hiddenUnits, classes }: StackShape): ParamLayout {
  const sizes = hiddenUnits ? [[dim, hiddenUnits], [hiddenUnits, classes]] : [[dim, classes]];
  let offset = 0;
  const layers = sizes.map(([inputs, units]) => {
    const layer = { inputs, units, kernel: offset, bias: 0 };
    offset += inputs * units;
    return layer;
  });
  const kernelFloats = offset;
  for (const layer of layers) {
    layer.bias = offset;
    offset += roundUp(layer.units, 4);
  }
  return { layers, kernelFloats, floats: offset };
}

const SLOTS: Record<HeadParams['optimizer'], number> = { adam: 2, rmsprop: 1, sgd: 0 };

/** Training-time state of one run that lives outside the wasm memory. */
export interface StackRun {
  readonly spec: RunSpec;
  /** byte offsets of its parameters, gradients and optimizer slots */
  readonly params: number;
  readonly grads: number;
  readonly slots: number;
  readonly shuffle: RandomStream;
  readonly dropoutStream: RandomStream;
  readonly dropout: { threshold: number; scale: number } | null;
  readonly lossWeights: Float64Array;
  readonly smoothing: number;
  /** tfjs keeps beta^t as a float32 variable multiplied once per step; so do we, for agreement */
  accBeta1: number;
  accBeta2: number;
}

export interface BatchStats { lossSum: number; correct: number }

export class HeadStack {
  readonly layout: ParamLayout;
  private readonly memory: WebAssembly.Memory;
  private readonly kernels: Kernels;
  private readonly f32: Float32Array;
  private readonly u8: Uint8Array;
  private readonly trainX: number;
  private readonly trainY: Int32Array;
  /** scratch, bytes: the step's input rows, hidden activations and their gradient, logits, random bits */
  private readonly input: number;
  private readonly hidden: number;
  private readonly hiddenGrad: number;
  private readonly logits: number;
  private readonly logitsGrad: number;
  private readonly random: number;
  private readonly runBase: number;
  /** one row's softmax, reused: the step loop must not allocate */
  private readonly probabilities: Float64Array;

  constructor(readonly shape: StackShape, train: { x: Float32Array; y: Int32Array }, runCount: number) {
    const { dim, hiddenUnits, classes, batchSize } = shape;
    this.layout = paramLayout(shape);
    const widest = Math.max(dim, hiddenUnits);
    let bytes = 0;
    const take = (floats: number) => { const at = bytes; bytes += roundUp(floats, 4) * 4; return at; };
    this.trainX = take(train.x.length);
    this.input = take(batchSize * dim);
    this.hidden = take(batchSize * hiddenUnits);
    this.hiddenGrad = take(batchSize * hiddenUnits);
    this.logits = take(batchSize * classes);
    this.logitsGrad = take(batchSize * classes);
    this.random = take(batchSize * widest / 2);
    this.runBase = bytes;
    this.probabilities = new Float64Array(classes);
    bytes += runCount * this.runBytes();
    this.memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    this.f32 = new Float32Array(this.memory.buffer);
    this.u8 = new Uint8Array(this.memory.buffer);
    this.f32.set(train.x, this.trainX / 4);
    this.trainY = train.y;
    this.kernels = instantiateKernels(this.memory);
  }

  private runBytes(): number {
    return this.layout.floats * 4 * (2 + SLOTS[this.shape.optimizer]);
  }

  /** Allocates run `slot` of the stack and writes its Glorot-uniform initial kernels (zero biases). */
  addRun(slot: number, spec: RunSpec, classCounts: Int32Array): StackRun {
    const params = this.runBase + slot * this.runBytes();
    const bytes = this.layout.floats * 4;
    const streams = runStreams(spec);
    this.f32.fill(0, params / 4, (params + this.runBytes()) / 4);
    for (const layer of this.layout.layers) {
      this.setKernel(params, layer, glorotUniform(streams.init, layer.inputs, layer.units));
    }
    const { dropout, labelSmoothing, classWeight } = spec.params;
    return {
      spec, params, grads: params + bytes, slots: params + 2 * bytes,
      shuffle: streams.shuffle, dropoutStream: streams.dropout,
      dropout: dropout > 0 ? dropoutThreshold(dropout) : null,
      lossWeights: classWeight === 'balanced' ? balancedWeights(classCounts) : new Float64Array(this.shape.classes).fill(1),
      smoothing: labelSmoothing, accBeta1: Math.fround(BETA1), accBeta2: Math.fround(BETA2),
    };
  }

  /** Writes a Keras-layout [inputs, units] kernel into the internal [units, inputs] layout. */
  private setKernel(params: number, layer: Layer, keras: Float32Array): void {
    const base = params / 4 + layer.kernel;
    for (let i = 0; i < layer.inputs; i++) {
      for (let u = 0; u < layer.units; u++) this.f32[base + u * layer.inputs + i] = keras[i * layer.units + u];
    }
  }

  /** The run's parameters in Keras layout and names (dense/kernel [in, units], dense/bias, dense_1/...). */
  weights(run: StackRun): { name: string; shape: number[]; values: Float32Array }[] {
    const base = run.params / 4;
    return this.layout.layers.flatMap((layer, i) => {
      const prefix = i ? `dense_${i}` : 'dense';
      const kernel = new Float32Array(layer.inputs * layer.units);
      for (let u = 0; u < layer.units; u++) {
        for (let k = 0; k < layer.inputs; k++) kernel[k * layer.units + u] = this.f32[base + layer.kernel + u * layer.inputs + k];
      }
      const bias = this.f32.slice(base + layer.bias, base + layer.bias + layer.units);
      return [
        { name: `${prefix}/kernel`, shape: [layer.inputs, layer.units], values: kernel },
        { name: `${prefix}/bias`, shape: [layer.units], values: bias },
      ];
    });
  }

  snapshot(run: StackRun): Float32Array {
    return this.f32.slice(run.params / 4, run.params / 4 + this.layout.floats);
  }

  restore(run: StackRun, snapshot: Float32Array): void {
    this.f32.set(snapshot, run.params / 4);
  }

  /** One epoch of minibatch steps over the run's next shuffle order; returns summed loss and hits. */
  trainEpoch(run: StackRun): BatchStats {
    const order = run.shuffle.permutation(this.trainY.length);
    const stats = { lossSum: 0, correct: 0 };
    for (let start = 0; start < order.length; start += this.shape.batchSize) {
      this.step(run, order.subarray(start, start + this.shape.batchSize), stats);
    }
    return stats;
  }

  private step(run: StackRun, rows: Int32Array, stats: BatchStats): void {
    const { dim } = this.shape;
    for (let r = 0; r < rows.length; r++) {
      const from = this.trainX / 4 + rows[r] * dim;
      this.f32.copyWithin(this.input / 4 + r * dim, from, from + dim);
    }
    this.applyDropout(run, this.input, rows.length * dim);
    const [first, second] = this.layout.layers;
    if (second) {
      this.dense(run, first, this.input, this.hidden, rows.length);
      this.relu(this.hidden, rows.length * first.units);
      this.applyDropout(run, this.hidden, rows.length * first.units);
      this.dense(run, second, this.hidden, this.logits, rows.length);
    } else {
      this.dense(run, first, this.input, this.logits, rows.length);
    }
    this.softmaxCrossEntropy(run, rows, stats);
    if (second) {
      this.kernelAndBiasGrad(run, second, this.logitsGrad, this.hidden, rows.length);
      this.hiddenGradient(run, second, rows.length);
      this.kernelAndBiasGrad(run, first, this.hiddenGrad, this.input, rows.length);
    } else {
      this.kernelAndBiasGrad(run, first, this.logitsGrad, this.input, rows.length);
    }
    this.update(run);
  }

  private applyDropout(run: StackRun, at: number, floats: number): void {
    if (!run.dropout) return;
    run.dropoutStream.fill(this.u8, this.random, floats * 2);
    this.kernels.mask(at, at + floats * 4, this.random, run.dropout.threshold, run.dropout.scale);
  }

  private dense(run: StackRun, layer: Layer, input: number, output: number, rows: number): void {
    this.kernels.dense(output, input, run.params + layer.kernel * 4, run.params + layer.bias * 4,
      rows, layer.inputs * 4, layer.units * 4);
  }

  private relu(at: number, floats: number): void {
    const start = at / 4;
    for (let i = start; i < start + floats; i++) if (!(this.f32[i] > 0)) this.f32[i] = 0;
  }

  /**
   * Softmax, cross-entropy against (smoothed) one-hot targets, and d(loss)/d(logits) =
   * weight(y) * (p - target) / rows, the fused gradient of softmax + mean cross-entropy.
   * The reported loss is the plain cross-entropy (no smoothing, no class weights), with
   * probabilities clipped to [1e-7, 1 - 1e-7] like Keras.
   */
  private softmaxCrossEntropy(run: StackRun, rows: Int32Array, stats: BatchStats): void {
    const { classes } = this.shape;
    const off = run.smoothing / classes;
    const probabilities = this.probabilities;
    for (let r = 0; r < rows.length; r++) {
      const label = this.trainY[rows[r]];
      const z = this.logits / 4 + r * classes;
      softmaxInto(probabilities, this.f32.subarray(z, z + classes));
      stats.lossSum += crossEntropy(probabilities, label);
      if (argmax(probabilities) === label) stats.correct++;
      const weight = run.lossWeights[label] / rows.length;
      const g = this.logitsGrad / 4 + r * classes;
      for (let c = 0; c < classes; c++) {
        const target = (c === label ? 1 - run.smoothing : 0) + off;
        this.f32[g + c] = weight * (probabilities[c] - target);
      }
    }
  }

  /** dKernel[u, :] = sum_r dOut[r, u] input[r, :]; dBias[u] = sum_r dOut[r, u]. */
  private kernelAndBiasGrad(run: StackRun, layer: Layer, outGrad: number, input: number, rows: number): void {
    const { inputs, units } = layer;
    this.kernels.outer(run.grads + layer.kernel * 4, outGrad, input, rows, units * 4, inputs * 4, units * 4, inputs * 4, 4);
    const bias = run.grads / 4 + layer.bias;
    for (let u = 0; u < units; u++) {
      let sum = 0;
      for (let r = 0; r < rows; r++) sum += this.f32[outGrad / 4 + r * units + u];
      this.f32[bias + u] = sum;
    }
  }

  /**
   * Gradient through the hidden dropout and relu: dHidden = dOut W, kept where the masked
   * activation is positive (kept by dropout and active in relu), times the dropout scale.
   */
  private hiddenGradient(run: StackRun, second: Layer, rows: number): void {
    const { inputs, units } = second;
    this.kernels.outer(this.hiddenGrad, this.logitsGrad, run.params + second.kernel * 4, units, 4, inputs * 4,
      rows * units * 4, inputs * 4, units * 4);
    const scale = run.dropout?.scale ?? 1;
    const grad = this.hiddenGrad / 4;
    const activation = this.hidden / 4;
    for (let i = 0; i < rows * inputs; i++) {
      this.f32[grad + i] = this.f32[activation + i] > 0 ? this.f32[grad + i] * scale : 0;
    }
  }

  private update(run: StackRun): void {
    const { params, grads, slots } = run;
    const { learningRate: lr, weightDecay } = run.spec.params;
    const kernelsEnd = params + this.layout.kernelFloats * 4;
    const end = params + this.layout.floats * 4;
    const slotBytes = this.layout.floats * 4;
    // Keras l2(weightDecay) adds weightDecay * sum(w^2) to the loss: gradient 2 * weightDecay * w, kernels only.
    const ranges: [number, number, number][] = [[params, kernelsEnd, 2 * weightDecay], [kernelsEnd, end, 0]];
    const f = Math.fround;
    for (const [start, stop, l2] of ranges) {
      const at = start - params;
      switch (this.shape.optimizer) {
        case 'adam':
          this.kernels.adam(start, stop, grads + at, slots + at, slots + slotBytes + at, -lr, BETA1, f(1 - BETA1),
            BETA2, f(1 - BETA2), f(1 - run.accBeta1), f(1 - run.accBeta2), EPSILON, l2);
          break;
        case 'rmsprop':
          this.kernels.rmsprop(start, stop, grads + at, slots + at, lr, RMSPROP_RHO, f(1 - RMSPROP_RHO), EPSILON, l2);
          break;
        case 'sgd':
          this.kernels.sgd(start, stop, grads + at, -lr, l2);
      }
    }
    run.accBeta1 = Math.fround(run.accBeta1 * BETA1);
    run.accBeta2 = Math.fround(run.accBeta2 * BETA2);
  }
}

/** sklearn's 'balanced': n / (classes * count[c]); absent classes get weight 0 (they never occur). */
function balancedWeights(counts: Int32Array): Float64Array {
  const total = counts.reduce((a, b) => a + b, 0);
  return Float64Array.from(counts, (count) => (count ? total / (counts.length * count) : 0));
}

/** Writes softmax(scores) into out (same length). */
export function softmaxInto(out: Float64Array | Float32Array, scores: ArrayLike<number>): void {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) max = Math.max(max, scores[i]);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += out[i] = Math.exp(scores[i] - max);
  for (let i = 0; i < scores.length; i++) out[i] /= sum;
}

/** -log p[label], with p clipped to [eps, 1 - eps] as Keras' categorical cross-entropy does. */
export function crossEntropy(probabilities: ArrayLike<number>, label: number): number {
  return -Math.log(Math.min(Math.max(probabilities[label], EPSILON), 1 - EPSILON));
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
