/**
 * The sweep trainer's SIMD kernels (kernels-wat.ts), loaded from the bytes the build
 * assembled (dist/stages/sweep/kernels.wasm, written by scripts/assemble-kernels.ts during
 * `npm run build`, `npm test` and `prepare`), with one typed wrapper per kernel.
 *
 * Wrappers take named arguments: pointers are byte offsets into the kernels' memory
 * (16-byte aligned), sizes are counts of floats or rows. Reduction lengths (inputs, and
 * the rows of a gradient's input) must be multiples of 8 floats.
 */
import { readFile } from 'node:fs/promises';

/** The module's exports: pointers and lengths in bytes, as the WAT declares them. */
interface RawKernels {
  mask(x: number, end: number, random: number, threshold: number, scale: number): void;
  gather(out: number, x: number, rows: number, count: number, rowBytes: number): void;
  dense(out: number, x: number, w: number, bias: number, rows: number, inBytes: number, outBytes: number): void;
  outer(g: number, d: number, x: number, count: number, dStep: number, xStep: number,
    outerBytes: number, innerBytes: number, dOuterStep: number): void;
  adam(w: number, end: number, g: number, m: number, v: number, negLr: number, beta1: number, oneMinusBeta1: number,
    beta2: number, oneMinusBeta2: number, correction1: number, correction2: number, epsilon: number, l2: number): void;
  sgd(w: number, end: number, g: number, negLr: number, l2: number): void;
  rmsprop(w: number, end: number, g: number, ms: number, lr: number, rho: number, oneMinusRho: number,
    epsilon: number, l2: number): void;
}

/** A block of `floats` parameters at `params`, its gradient at `grads`, and the L2 factor added to the gradient. */
interface UpdateBlock { params: number; grads: number; floats: number; learningRate: number; l2: number }

export class Kernels {
  private readonly raw: RawKernels;

  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory) {
    this.raw = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as RawKernels;
  }

  /** Inverted dropout in place on `floats` floats (a multiple of 8): each float is kept, times scale, iff its uint16 in `random` >= threshold. */
  mask(a: { data: number; floats: number; random: number; threshold: number; scale: number }): void {
    this.raw.mask(a.data, a.data + a.floats * 4, a.random, a.threshold, a.scale);
  }

  /** out[i, :] = source[order[i], :] for i < count; order holds int32 row indices. */
  gather(a: { out: number; source: number; order: number; count: number; rowFloats: number }): void {
    this.raw.gather(a.out, a.source, a.order, a.count, a.rowFloats * 4);
  }

  /** out[r, u] = bias[u] + input[r, :] . kernel[u, :]: input [rows, inputs], kernel [units, inputs], out [rows, units]. */
  dense(a: { out: number; input: number; kernel: number; bias: number; rows: number; inputs: number; units: number }): void {
    this.raw.dense(a.out, a.input, a.kernel, a.bias, a.rows, a.inputs * 4, a.units * 4);
  }

  /** The kernel gradient out[u, :] = sum_r outGrad[r, u] input[r, :]: outGrad [rows, units], input [rows, inputs], out [units, inputs]. */
  kernelGradient(a: { out: number; outGrad: number; input: number; rows: number; inputs: number; units: number }): void {
    this.raw.outer(a.out, a.outGrad, a.input, a.rows, a.units * 4, a.inputs * 4, a.units * 4, a.inputs * 4, 4);
  }

  /** The input gradient out[r, :] = sum_u outGrad[r, u] kernel[u, :]: outGrad [rows, units], kernel [units, inputs], out [rows, inputs]. */
  inputGradient(a: { out: number; outGrad: number; kernel: number; rows: number; inputs: number; units: number }): void {
    this.raw.outer(a.out, a.outGrad, a.kernel, a.units, 4, a.inputs * 4, a.rows * a.units * 4, a.inputs * 4, a.units * 4);
  }

  /**
   * tfjs' Adam, op for op: m = m b1 + g (1 - b1); v = v b2 + g^2 (1 - b2);
   * params += -lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), with g = grads + l2 params.
   * accBeta1/2 are b1^t and b2^t as tfjs keeps them (float32, multiplied once per step).
   */
  adam(a: UpdateBlock & { m: number; v: number; beta1: number; beta2: number; accBeta1: number; accBeta2: number; epsilon: number }): void {
    this.raw.adam(a.params, a.params + a.floats * 4, a.grads, a.m, a.v, -a.learningRate, a.beta1, 1 - a.beta1, a.beta2, 1 - a.beta2,
      1 - a.accBeta1, 1 - a.accBeta2, a.epsilon, a.l2);
  }

  /** params += -lr g, with g = grads + l2 params. */
  sgd(a: UpdateBlock): void {
    this.raw.sgd(a.params, a.params + a.floats * 4, a.grads, -a.learningRate, a.l2);
  }

  /** tfjs' RMSProp without momentum: ms = ms rho + g^2 (1 - rho); params -= g lr / sqrt(ms + eps), with g = grads + l2 params. */
  rmsprop(a: UpdateBlock & { meanSquare: number; rho: number; epsilon: number }): void {
    this.raw.rmsprop(a.params, a.params + a.floats * 4, a.grads, a.meanSquare, a.learningRate, a.rho, 1 - a.rho, a.epsilon, a.l2);
  }
}

/** Where the build writes the assembled kernels: beside this module in dist/. */
export const KERNELS_WASM = new URL('./kernels.wasm', import.meta.url);

let compiled: Promise<WebAssembly.Module> | undefined;

/** The kernels' module, compiled once per process. A WebAssembly.Module can be posted to worker threads. */
export function kernelModule(): Promise<WebAssembly.Module> {
  compiled ??= readFile(KERNELS_WASM).then(
    (bytes) => WebAssembly.compile(bytes),
    (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
      throw new Error(`the sweep kernels are not built (${KERNELS_WASM.pathname} is missing): run \`npm run build\``);
    },
  );
  return compiled;
}
