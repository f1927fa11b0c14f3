/**
 * One dense head in training, in a WebAssembly memory that also holds the data: the
 * train/val/test rows, the epoch's row order, one scratch area for the step being computed,
 * and the run's parameters, gradients and optimizer slots. A training step is gather ->
 * dropout -> dense (-> relu -> dropout -> dense) -> softmax cross-entropy -> backward ->
 * optimizer update, all in the SIMD kernels except the [rows, classes]-sized softmax and
 * bias gradients, which are cheap in JavaScript. A HeadTrainer trains its runs one after
 * another, reusing the memory: filling fresh memory is slow, reusing it is not.
 */
import { dropoutThreshold, glorotUniform, runStreams, type RandomStream } from './random.js';
import type { Split } from '../../data/dataset.js';
import { Kernels } from './simd.js';
import { argmax } from '../../core/arrays.js';
import { balancedWeights } from './class-weights.js';
import type { HeadParams, RunSpec, TrainData } from './types.js';

const BETA1 = 0.9;
const BETA2 = 0.999;
const RMSPROP_RHO = 0.9;
/** tfjs' backend epsilon, the default of its optimizers; Keras also defaults to 1e-7. */
export const EPSILON = 1e-7;

/** What the memory layout depends on: runs that share it can share a HeadTrainer. */
export interface HeadShape { hiddenUnits: number; batchSize: number; optimizer: HeadParams['optimizer'] }

/** One dense layer inside a run's parameter block (offsets in floats). */
interface Layer { inputs: number; units: number; kernel: number; bias: number }

interface ParamLayout { layers: Layer[]; kernelFloats: number; floats: number }

const roundUp = (value: number, multiple: number) => Math.ceil(value / multiple) * multiple;

/** Kernels first, then biases (each padded to 4 floats): L2 applies to the kernel range only. */
function paramLayout(dim: number, classes: number, hiddenUnits: number): ParamLayout {
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

/** Training-time state of the run in the memory, beyond its parameters and slots. */
export interface HeadRun {
  readonly spec: RunSpec;
  readonly shuffle: RandomStream;
  readonly dropoutStream: RandomStream;
  readonly dropout: { threshold: number; scale: number } | null;
  readonly lossWeights: Float64Array;
  readonly smoothing: number;
  /** tfjs keeps beta^t as a float32 variable multiplied once per step; so do we, for agreement */
  accBeta1: number;
  accBeta2: number;
}

interface BatchStats { lossSum: number; correct: number }

/** Byte offsets of everything in the memory. */
interface MemoryLayout {
  x: Record<Split, number>;
  /** the epoch's training-row order, int32 */
  order: number;
  /** scratch: the step's input rows, hidden activations and their gradient, logits, random bits */
  input: number; hidden: number; hiddenGrad: number; logits: number; logitsGrad: number; random: number;
  /** the run's parameters, gradients and optimizer slots, one block of ParamLayout.floats each */
  params: number; grads: number; slots: number;
  bytes: number;
}

function memoryLayout(data: TrainData, shape: HeadShape, params: ParamLayout): MemoryLayout {
  const { dim, classes } = data;
  const { hiddenUnits, batchSize } = shape;
  let bytes = 0;
  const take = (floats: number) => { const at = bytes; bytes += roundUp(floats, 4) * 4; return at; };
  const x = { train: take(data.train.x.length), val: take(data.val.x.length), test: take(data.test.x.length) };
  const layout = {
    x, order: take(data.train.y.length),
    input: take(batchSize * dim), hidden: take(batchSize * hiddenUnits), hiddenGrad: take(batchSize * hiddenUnits),
    logits: take(batchSize * classes), logitsGrad: take(batchSize * classes),
    random: take(batchSize * Math.max(dim, hiddenUnits) / 2),
    params: take(params.floats), grads: take(params.floats), slots: take(params.floats * SLOTS[shape.optimizer]),
  };
  return { ...layout, bytes };
}

export class HeadTrainer {
  private readonly params: ParamLayout;
  private readonly at: MemoryLayout;
  private readonly kernels: Kernels;
  private readonly f32: Float32Array;
  private readonly i32: Int32Array;
  private readonly u8: Uint8Array;
  /** one row's softmax, reused: the step loop must not allocate */
  private readonly probabilities: Float64Array;

  constructor(module: WebAssembly.Module, private readonly shape: HeadShape, private readonly data: TrainData) {
    this.params = paramLayout(data.dim, data.classes, shape.hiddenUnits);
    this.at = memoryLayout(data, shape, this.params);
    const memory = new WebAssembly.Memory({ initial: Math.ceil(this.at.bytes / 65536) });
    this.f32 = new Float32Array(memory.buffer);
    this.i32 = new Int32Array(memory.buffer);
    this.u8 = new Uint8Array(memory.buffer);
    for (const split of ['train', 'val', 'test'] as const) this.f32.set(data[split].x, this.at.x[split] / 4);
    this.probabilities = new Float64Array(data.classes);
    this.kernels = new Kernels(module, memory);
  }

  /** Starts `spec` in the memory (replacing the previous run): Glorot-uniform kernels, zero biases and slots. */
  startRun(spec: RunSpec, classCounts: Int32Array): HeadRun {
    const streams = runStreams(spec);
    this.f32.fill(0, this.at.params / 4, this.at.bytes / 4);
    for (const layer of this.params.layers) this.setKernel(layer, glorotUniform(streams.init, layer.inputs, layer.units));
    const { dropout, labelSmoothing, classWeight } = spec.params;
    return {
      spec, shuffle: streams.shuffle, dropoutStream: streams.dropout,
      dropout: dropout > 0 ? dropoutThreshold(dropout) : null,
      lossWeights: classWeight === 'balanced' ? balancedWeights(classCounts) : new Float64Array(this.data.classes).fill(1),
      smoothing: labelSmoothing, accBeta1: Math.fround(BETA1), accBeta2: Math.fround(BETA2),
    };
  }

  /** Writes a Keras-layout [inputs, units] kernel into the internal [units, inputs] layout. */
  private setKernel(layer: Layer, keras: Float32Array): void {
    const base = this.at.params / 4 + layer.kernel;
    for (let i = 0; i < layer.inputs; i++) {
      for (let u = 0; u < layer.units; u++) this.f32[base + u * layer.inputs + i] = keras[i * layer.units + u];
    }
  }

  /** The run's parameters in Keras layout and names (dense/kernel [in, units], dense/bias, dense_1/...). */
  weights(): { name: string; shape: number[]; values: Float32Array }[] {
    const base = this.at.params / 4;
    return this.params.layers.flatMap((layer, i) => {
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

  snapshot(): Float32Array {
    return this.f32.slice(this.at.params / 4, this.at.params / 4 + this.params.floats);
  }

  restore(snapshot: Float32Array): void {
    this.f32.set(snapshot, this.at.params / 4);
  }

  /** One epoch of minibatch steps over the run's next shuffle order; returns summed loss and hits. */
  trainEpoch(run: HeadRun): BatchStats {
    const rows = this.data.train.y.length;
    this.i32.set(run.shuffle.permutation(rows), this.at.order / 4);
    const stats = { lossSum: 0, correct: 0 };
    for (let start = 0; start < rows; start += this.shape.batchSize) {
      this.step(run, start, Math.min(this.shape.batchSize, rows - start), stats);
    }
    return stats;
  }

  /** Logits [rows, classes] of the current parameters on every row (every view) of a split, batch by batch through the scratch. */
  logits(split: Split): Float32Array {
    const { classes, dim } = this.data;
    const rows = this.data[split].x.length / dim; // images x views
    const out = new Float32Array(rows * classes);
    const [first, second] = this.params.layers;
    for (let start = 0; start < rows; start += this.shape.batchSize) {
      const count = Math.min(this.shape.batchSize, rows - start);
      const x = this.at.x[split] + start * dim * 4;
      if (second) {
        this.dense(first, x, this.at.hidden, count);
        this.relu(this.at.hidden, count * first.units);
        this.dense(second, this.at.hidden, this.at.logits, count);
      } else {
        this.dense(first, x, this.at.logits, count);
      }
      out.set(this.f32.subarray(this.at.logits / 4, this.at.logits / 4 + count * classes), start * classes);
    }
    return out;
  }

  /** Rows order[start, start + count) of train. */
  private step(run: HeadRun, start: number, count: number, stats: BatchStats): void {
    const { input, hidden, logits, logitsGrad, hiddenGrad } = this.at;
    const dim = this.data.dim;
    this.kernels.gather({ out: input, source: this.at.x.train, order: this.at.order + start * 4, count, rowFloats: dim });
    this.applyDropout(run, input, count * dim);
    const [first, second] = this.params.layers;
    if (second) {
      this.dense(first, input, hidden, count);
      this.relu(hidden, count * first.units);
      this.applyDropout(run, hidden, count * first.units);
      this.dense(second, hidden, logits, count);
    } else {
      this.dense(first, input, logits, count);
    }
    this.softmaxCrossEntropy(run, start, count, stats);
    if (second) {
      this.kernelAndBiasGrad(second, logitsGrad, hidden, count);
      this.hiddenGradient(run, second, count);
      this.kernelAndBiasGrad(first, hiddenGrad, input, count);
    } else {
      this.kernelAndBiasGrad(first, logitsGrad, input, count);
    }
    this.update(run);
  }

  private applyDropout(run: HeadRun, at: number, floats: number): void {
    if (!run.dropout) return;
    run.dropoutStream.fill(this.u8, this.at.random, floats * 2);
    this.kernels.mask({ data: at, floats, random: this.at.random, ...run.dropout });
  }

  private dense(layer: Layer, input: number, output: number, rows: number): void {
    this.kernels.dense({ out: output, input, kernel: this.at.params + layer.kernel * 4, bias: this.at.params + layer.bias * 4,
      rows, inputs: layer.inputs, units: layer.units });
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
  private softmaxCrossEntropy(run: HeadRun, start: number, rows: number, stats: BatchStats): void {
    const { classes } = this.data;
    const off = run.smoothing / classes;
    const probabilities = this.probabilities;
    for (let r = 0; r < rows; r++) {
      const label = this.data.train.y[this.i32[this.at.order / 4 + start + r]];
      const z = this.at.logits / 4 + r * classes;
      softmaxInto(probabilities, this.f32.subarray(z, z + classes));
      stats.lossSum += crossEntropy(probabilities, label);
      if (argmax(probabilities) === label) stats.correct++;
      const weight = run.lossWeights[label] / rows;
      const g = this.at.logitsGrad / 4 + r * classes;
      for (let c = 0; c < classes; c++) {
        const target = (c === label ? 1 - run.smoothing : 0) + off;
        this.f32[g + c] = weight * (probabilities[c] - target);
      }
    }
  }

  /** dKernel[u, :] = sum_r dOut[r, u] input[r, :]; dBias[u] = sum_r dOut[r, u]. */
  private kernelAndBiasGrad(layer: Layer, outGrad: number, input: number, rows: number): void {
    const { inputs, units } = layer;
    this.kernels.kernelGradient({ out: this.at.grads + layer.kernel * 4, outGrad, input, rows, inputs, units });
    const bias = this.at.grads / 4 + layer.bias;
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
  private hiddenGradient(run: HeadRun, second: Layer, rows: number): void {
    const { inputs, units } = second;
    this.kernels.inputGradient({ out: this.at.hiddenGrad, outGrad: this.at.logitsGrad, kernel: this.at.params + second.kernel * 4,
      rows, inputs, units });
    const scale = run.dropout?.scale ?? 1;
    const grad = this.at.hiddenGrad / 4;
    const activation = this.at.hidden / 4;
    for (let i = 0; i < rows * inputs; i++) {
      this.f32[grad + i] = this.f32[activation + i] > 0 ? this.f32[grad + i] * scale : 0;
    }
  }

  private update(run: HeadRun): void {
    const { params, grads, slots } = this.at;
    const { learningRate, weightDecay } = run.spec.params;
    const { kernelFloats, floats } = this.params;
    // Keras l2(weightDecay) adds weightDecay * sum(w^2) to the loss: gradient 2 * weightDecay * w, kernels only.
    const blocks = [{ first: 0, floats: kernelFloats, l2: 2 * weightDecay }, { first: kernelFloats, floats: floats - kernelFloats, l2: 0 }];
    for (const { first, floats: count, l2 } of blocks) {
      const block = { params: params + first * 4, grads: grads + first * 4, floats: count, learningRate, l2 };
      switch (this.shape.optimizer) {
        case 'adam':
          this.kernels.adam({ ...block, m: slots + first * 4, v: slots + (floats + first) * 4, beta1: BETA1, beta2: BETA2,
            accBeta1: run.accBeta1, accBeta2: run.accBeta2, epsilon: EPSILON });
          break;
        case 'rmsprop':
          this.kernels.rmsprop({ ...block, meanSquare: slots + first * 4, rho: RMSPROP_RHO, epsilon: EPSILON });
          break;
        case 'sgd':
          this.kernels.sgd(block);
      }
    }
    run.accBeta1 = Math.fround(run.accBeta1 * BETA1);
    run.accBeta2 = Math.fround(run.accBeta2 * BETA2);
  }
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
