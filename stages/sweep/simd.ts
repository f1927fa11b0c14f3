/**
 * Hand-assembled WebAssembly SIMD kernels for the sweep trainer's inner loop.
 *
 * Why not tfjs ops: a training step of one head is a [32,1280]x[1280,6] product, and tfjs
 * has no efficient form for 48 of them with different weights: on this machine the wasm
 * backend's batched matMul runs at ~2.6 GFLOPS (9-10 ms per step for 48 runs, its batched
 * path bypasses XNNPACK), gather takes ~77 ms, and every op costs tens of microseconds of
 * dispatch. Plain JavaScript loops reach ~0.3 Gelem/s. These kernels run the same math in
 * 128-bit SIMD directly on one shared WebAssembly memory, with no allocation per step.
 *
 * All pointers and lengths are byte offsets into the memory; every matrix is row-major
 * float32 and every reduction length must be a multiple of 8 floats (checked by callers).
 * Each kernel reduces in one fixed order, so results do not depend on what else shares
 * the memory: a run's numbers are the same alone or in a batch.
 */

const I32 = 0x7f;
const F32 = 0x7d;
const V128 = 0x7b;
type ValType = typeof I32 | typeof F32 | typeof V128;

function uleb(value: number): number[] {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return out;
}

function sleb(value: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && !(byte & 0x40)) || (value === -1 && byte & 0x40);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

function vector(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function section(id: number, payload: number[]): number[] {
  return [id, ...uleb(payload.length), ...payload];
}

function name(text: string): number[] {
  const bytes = [...Buffer.from(text, 'utf8')];
  return [...uleb(bytes.length), ...bytes];
}

// --- instruction helpers (only what the kernels use) ---
const get = (local: number) => [0x20, ...uleb(local)];
const set = (local: number) => [0x21, ...uleb(local)];
const i32 = (value: number) => [0x41, ...sleb(value)];
const f32 = (value: number) => [0x43, ...new Uint8Array(new Float32Array([value]).buffer)];
const I32_ADD = [0x6a];
const I32_MUL = [0x6c];
const I32_GE_U = [0x4f];
const F32_ADD = [0x92];
const F32_LOAD = [0x2a, 2, 0];
const F32_STORE = [0x38, 2, 0];
const simd = (op: number, ...immediates: number[]) => [0xfd, ...uleb(op), ...immediates];
const vload = (offset = 0) => simd(0x00, 4, ...uleb(offset));
const vstore = (offset = 0) => simd(0x0b, 4, ...uleb(offset));
const I16X8_SPLAT = simd(0x10);
const F32X4_SPLAT = simd(0x13);
const laneOf = (lane: number) => simd(0x1f, lane);
const I16X8_GE_U = simd(0x36);
const V128_AND = simd(0x4e);
const I32X4_EXTEND_LOW_I16X8_S = simd(0xa7);
const I32X4_EXTEND_HIGH_I16X8_S = simd(0xa8);
const F32X4_SQRT = simd(0xe3);
const F32X4_ADD = simd(0xe4);
const F32X4_SUB = simd(0xe5);
const F32X4_MUL = simd(0xe6);
const F32X4_DIV = simd(0xe7);
const zeroVector = () => [...f32(0), ...F32X4_SPLAT];
const splat = (local: number) => [...get(local), ...F32X4_SPLAT];

/** `while (local < end) { body; local += step }` where end is a local; step 0: the body advances. */
function whileBelow(local: number, end: number, step: number, body: number[]): number[] {
  const increment = step ? [...get(local), ...i32(step), ...I32_ADD, ...set(local)] : [];
  return [
    0x02, 0x40, 0x03, 0x40,
    ...get(local), ...get(end), ...I32_GE_U, 0x0d, 1,
    ...body, ...increment,
    0x0c, 0, 0x0b, 0x0b,
  ];
}

/** `local += amount` with amount a local. */
const advance = (local: number, amount: number) => [...get(local), ...get(amount), ...I32_ADD, ...set(local)];
/** `target = base + count * size` */
const endOf = (target: number, base: number, count: number, size: number) =>
  [...get(base), ...get(count), ...get(size), ...I32_MUL, ...I32_ADD, ...set(target)];
/** `acc = acc + load(a + offset) * load(b + offset)` on f32x4 */
const accumulate = (acc: number, a: number[], b: number[]) =>
  [...get(acc), ...a, ...b, ...F32X4_MUL, ...F32X4_ADD, ...set(acc)];

interface Kernel {
  readonly name: string;
  readonly params: ValType[];
  readonly locals: ValType[];
  readonly body: number[];
}

/**
 * mask(x, end, random, threshold, scale): inverted dropout in place on floats [x, end).
 * Each float has its own uint16 in `random`; it is kept (and scaled) iff random >= threshold.
 */
const maskKernel: Kernel = (() => {
  const [x, end, random, threshold, scale, keep, vThreshold, vScale] = [0, 1, 2, 3, 4, 5, 6, 7];
  const half = (offset: number, extend: number[]) => [
    ...get(x), ...get(x), ...vload(offset), ...get(keep), ...extend, ...V128_AND,
    ...get(vScale), ...F32X4_MUL, ...vstore(offset),
  ];
  return {
    name: 'mask', params: [I32, I32, I32, I32, F32], locals: [V128, V128, V128],
    body: [
      ...get(threshold), ...I16X8_SPLAT, ...set(vThreshold),
      ...splat(scale), ...set(vScale),
      ...whileBelow(x, end, 32, [
        ...get(random), ...vload(), ...get(vThreshold), ...I16X8_GE_U, ...set(keep),
        ...half(0, I32X4_EXTEND_LOW_I16X8_S), ...half(16, I32X4_EXTEND_HIGH_I16X8_S),
        ...get(random), ...i32(16), ...I32_ADD, ...set(random),
      ]),
    ],
  };
})();

/** dense(out, x, w, bias, rows, inBytes, outBytes): out[r,n] = bias[n] + x[r,:] . w[n,:] */
const denseKernel: Kernel = (() => {
  const [out, x, w, bias, rows, inBytes, outBytes] = [0, 1, 2, 3, 4, 5, 6];
  const [xEnd, row, wRow, b, bEnd, p, q, pEnd, a0, a1] = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
  const sumLanes = [
    ...get(a0), ...get(a1), ...F32X4_ADD, ...set(a0),
    ...get(a0), ...laneOf(0), ...get(a0), ...laneOf(1), ...F32_ADD,
    ...get(a0), ...laneOf(2), ...get(a0), ...laneOf(3), ...F32_ADD, ...F32_ADD,
  ];
  return {
    name: 'dense', params: [I32, I32, I32, I32, I32, I32, I32],
    locals: [I32, I32, I32, I32, I32, I32, I32, I32, V128, V128],
    body: [
      ...endOf(xEnd, x, rows, inBytes), ...get(x), ...set(row),
      ...whileBelow(row, xEnd, 0, [
        ...get(w), ...set(wRow), ...get(bias), ...set(b), ...get(bias), ...get(outBytes), ...I32_ADD, ...set(bEnd),
        ...whileBelow(b, bEnd, 4, [
          ...zeroVector(), ...set(a0), ...zeroVector(), ...set(a1),
          ...get(row), ...set(p), ...get(wRow), ...set(q), ...get(row), ...get(inBytes), ...I32_ADD, ...set(pEnd),
          ...whileBelow(p, pEnd, 32, [
            ...accumulate(a0, [...get(p), ...vload()], [...get(q), ...vload()]),
            ...accumulate(a1, [...get(p), ...vload(16)], [...get(q), ...vload(16)]),
            ...get(q), ...i32(32), ...I32_ADD, ...set(q),
          ]),
          ...get(out), ...sumLanes, ...get(b), ...F32_LOAD, ...F32_ADD, ...F32_STORE,
          ...get(out), ...i32(4), ...I32_ADD, ...set(out),
          ...get(q), ...set(wRow),
        ]),
        ...advance(row, inBytes),
      ]),
    ],
  };
})();

/**
 * outer(g, d, x, count, dStride, xStride, outer, inner): for each of `outer` rows o and
 * each 8-float block of `inner` bytes, g[o, block] = sum_i d[i*dStride + o] * x[i*xStride + block].
 * With d = dOut (stride N) and x = input rows it is the kernel gradient dW[n,:] = sum_r dOut[r,n] x[r,:];
 * with d = dOut rows and x = W it is the input gradient dX[r,:] = sum_n dOut[r,n] W[n,:].
 */
const outerKernel: Kernel = (() => {
  const [g, d, x, count, dStep, xStep, outerBytes, innerBytes, dOuterStep] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [dRow, dEnd, block, blockEnd, p, dp, dpEnd, a0, a1, v] = [9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
  return {
    name: 'outer', params: [I32, I32, I32, I32, I32, I32, I32, I32, I32],
    locals: [I32, I32, I32, I32, I32, I32, I32, V128, V128, V128],
    body: [
      ...get(d), ...set(dRow), ...get(d), ...get(outerBytes), ...I32_ADD, ...set(dEnd),
      ...whileBelow(dRow, dEnd, 0, [
        ...get(x), ...set(block), ...get(x), ...get(innerBytes), ...I32_ADD, ...set(blockEnd),
        ...whileBelow(block, blockEnd, 32, [
          ...zeroVector(), ...set(a0), ...zeroVector(), ...set(a1),
          ...get(block), ...set(p), ...get(dRow), ...set(dp), ...endOf(dpEnd, dRow, count, dStep),
          ...whileBelow(dp, dpEnd, 0, [
            ...get(dp), ...F32_LOAD, ...F32X4_SPLAT, ...set(v),
            ...accumulate(a0, get(v), [...get(p), ...vload()]),
            ...accumulate(a1, get(v), [...get(p), ...vload(16)]),
            ...advance(p, xStep), ...advance(dp, dStep),
          ]),
          ...get(g), ...get(a0), ...vstore(), ...get(g), ...get(a1), ...vstore(16),
          ...get(g), ...i32(32), ...I32_ADD, ...set(g),
        ]),
        ...advance(dRow, dOuterStep),
      ]),
    ],
  };
})();

/** Splats scalar parameters into vector locals once, before a loop. */
const splatAll = (pairs: [number, number][]) => pairs.flatMap(([scalar, vec]) => [...splat(scalar), ...set(vec)]);
const next16 = (...pointers: number[]) => pointers.flatMap((p) => [...get(p), ...i32(16), ...I32_ADD, ...set(p)]);
/** grad = g + l2 * w: L2 regularization in the loss, its gradient added before the update. */
const regularizedGradient = (g: number, w: number, l2: number, grad: number) =>
  [...get(g), ...vload(), ...get(w), ...vload(), ...get(l2), ...F32X4_MUL, ...F32X4_ADD, ...set(grad)];

/**
 * Optimizer updates over a whole parameter block [w, end), written op for op like tfjs'
 * optimizers so that the reference trainer agrees.
 * adam(w, end, g, m, v, -lr, beta1, 1-beta1, beta2, 1-beta2, 1-beta1^t, 1-beta2^t, eps, l2):
 * m = m*b1 + g*(1-b1); v = v*b2 + g^2*(1-b2); w = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) * -lr + w
 */
const adamKernel: Kernel = (() => {
  const scalars = [5, 6, 7, 8, 9, 10, 11, 12, 13];
  const [w, end, g, m, v] = [0, 1, 2, 3, 4];
  const [negLr, b1, c1, b2, c2, bias1, bias2, eps, l2] = scalars.map((i) => i + 9);
  const [grad, mNew, vNew] = [23, 24, 25];
  return {
    name: 'adam', params: [I32, I32, I32, I32, I32, F32, F32, F32, F32, F32, F32, F32, F32, F32],
    locals: Array<ValType>(12).fill(V128),
    body: [
      ...splatAll(scalars.map((i) => [i, i + 9])),
      ...whileBelow(w, end, 16, [
        ...regularizedGradient(g, w, l2, grad),
        ...get(m), ...vload(), ...get(b1), ...F32X4_MUL, ...get(grad), ...get(c1), ...F32X4_MUL, ...F32X4_ADD, ...set(mNew),
        ...get(v), ...vload(), ...get(b2), ...F32X4_MUL,
        ...get(grad), ...get(grad), ...F32X4_MUL, ...get(c2), ...F32X4_MUL, ...F32X4_ADD, ...set(vNew),
        ...get(m), ...get(mNew), ...vstore(), ...get(v), ...get(vNew), ...vstore(),
        ...get(w),
        ...get(mNew), ...get(bias1), ...F32X4_DIV,
        ...get(vNew), ...get(bias2), ...F32X4_DIV, ...F32X4_SQRT, ...get(eps), ...F32X4_ADD, ...F32X4_DIV,
        ...get(negLr), ...F32X4_MUL, ...get(w), ...vload(), ...F32X4_ADD, ...vstore(),
        ...next16(g, m, v),
      ]),
    ],
  };
})();

/** sgd(w, end, g, -lr, l2): w = -lr * g + w */
const sgdKernel: Kernel = (() => {
  const [w, end, g] = [0, 1, 2];
  const [negLr, l2, grad] = [5, 6, 7];
  return {
    name: 'sgd', params: [I32, I32, I32, F32, F32], locals: [V128, V128, V128],
    body: [
      ...splatAll([[3, negLr], [4, l2]]),
      ...whileBelow(w, end, 16, [
        ...regularizedGradient(g, w, l2, grad),
        ...get(w), ...get(negLr), ...get(grad), ...F32X4_MUL, ...get(w), ...vload(), ...F32X4_ADD, ...vstore(),
        ...next16(g),
      ]),
    ],
  };
})();

/** rmsprop(w, end, g, ms, lr, rho, 1-rho, eps, l2): ms = ms*rho + g^2*(1-rho); w = w - g*lr / sqrt(ms + eps) */
const rmspropKernel: Kernel = (() => {
  const scalars = [4, 5, 6, 7, 8];
  const [w, end, g, ms] = [0, 1, 2, 3];
  const [lr, rho, c, eps, l2] = scalars.map((i) => i + 5);
  const [grad, msNew] = [14, 15];
  return {
    name: 'rmsprop', params: [I32, I32, I32, I32, F32, F32, F32, F32, F32], locals: Array<ValType>(7).fill(V128),
    body: [
      ...splatAll(scalars.map((i) => [i, i + 5])),
      ...whileBelow(w, end, 16, [
        ...regularizedGradient(g, w, l2, grad),
        ...get(ms), ...vload(), ...get(rho), ...F32X4_MUL,
        ...get(grad), ...get(grad), ...F32X4_MUL, ...get(c), ...F32X4_MUL, ...F32X4_ADD, ...set(msNew),
        ...get(ms), ...get(msNew), ...vstore(),
        ...get(w), ...get(w), ...vload(),
        ...get(grad), ...get(lr), ...F32X4_MUL, ...get(msNew), ...get(eps), ...F32X4_ADD, ...F32X4_SQRT, ...F32X4_DIV,
        ...F32X4_SUB, ...vstore(),
        ...next16(g, ms),
      ]),
    ],
  };
})();

const KERNELS = [maskKernel, denseKernel, outerKernel, adamKernel, sgdKernel, rmspropKernel];

function assemble(kernels: readonly Kernel[]): Uint8Array<ArrayBuffer> {
  const types = kernels.map((k) => [0x60, ...vector(k.params.map((p) => [p])), 0]);
  const importMemory = [...name('env'), ...name('memory'), 0x02, 0x00, 0x00];
  const functions = kernels.map((_, i) => uleb(i));
  const exports = kernels.map((k, i) => [...name(k.name), 0x00, ...uleb(i)]);
  const bodies = kernels.map((k) => {
    const locals = vector(k.locals.map((t) => [1, t]));
    const code = [...locals, ...k.body, 0x0b];
    return [...uleb(code.length), ...code];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vector(types)),
    ...section(2, vector([importMemory])),
    ...section(3, vector(functions)),
    ...section(7, vector(exports)),
    ...section(10, vector(bodies)),
  ]);
}

export interface Kernels {
  mask(x: number, end: number, random: number, threshold: number, scale: number): void;
  dense(out: number, x: number, w: number, bias: number, rows: number, inBytes: number, outBytes: number): void;
  outer(g: number, d: number, x: number, count: number, dStep: number, xStep: number,
    outerBytes: number, innerBytes: number, dOuterStep: number): void;
  adam(w: number, end: number, g: number, m: number, v: number, negLr: number, beta1: number, oneMinusBeta1: number,
    beta2: number, oneMinusBeta2: number, correction1: number, correction2: number, epsilon: number, l2: number): void;
  sgd(w: number, end: number, g: number, negLr: number, l2: number): void;
  rmsprop(w: number, end: number, g: number, ms: number, lr: number, rho: number, oneMinusRho: number,
    epsilon: number, l2: number): void;
}

let compiled: WebAssembly.Module | undefined;

/** Instantiates the kernels over `memory` (the module is compiled once per process). */
export function instantiateKernels(memory: WebAssembly.Memory): Kernels {
  compiled ??= new WebAssembly.Module(assemble(KERNELS));
  return new WebAssembly.Instance(compiled, { env: { memory } }).exports as unknown as Kernels;
}
