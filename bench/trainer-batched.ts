/**
 * The competitor of the SIMD trainer in `npm run bench -- sweep`: all runs of a sweep
 * stepped together in tfjs as batched matmuls over a runs axis. Each step gathers every
 * active run's own batch ([runs, batch, dim]), applies each run's own dropout mask,
 * multiplies by the runs' kernels ([runs, dim, classes]) and updates them with Adam under
 * each run's own learning rate. Gradients are written out (softmax cross-entropy of a linear
 * head has a closed form), so no autograd tape is recorded. Runs that stop early leave the
 * runs axis at the end of the epoch, so the batch only ever computes live runs.
 *
 * Linear heads with Adam only (the default sweep): this is a yardstick, not a second trainer.
 * Dropout bits come from the same AES-CTR streams as the SIMD trainer (tfjs' own seeded
 * generator runs in JavaScript, far slower than the matmuls it would feed), read as int32
 * and compared in tfjs against a threshold.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { glorotUniform, runStreams, type RandomStream } from '../stages/sweep/random.js';
import type { EarlyStopping, RunSpec, TrainData } from '../stages/sweep/trainer.js';

type Tf = typeof tfjs;

const BETA1 = 0.9;
const BETA2 = 0.999;
const EPSILON = 1e-7;

export interface BatchedRunResult { key: string; seed: number; bestEpoch: number; epochsRun: number; valLoss: number; valAccuracy: number; testAccuracy: number }
export interface BatchedSweep { seconds: number; runEpochs: number; steps: number; results: BatchedRunResult[] }

/** Per-run optimizer state and best weights, every tensor with the active runs on axis 0. */
interface State { w: tfjs.Tensor3D; b: tfjs.Tensor3D; mW: tfjs.Tensor3D; vW: tfjs.Tensor3D; mB: tfjs.Tensor3D; vB: tfjs.Tensor3D; bestW: tfjs.Tensor3D; bestB: tfjs.Tensor3D; lr: tfjs.Tensor3D; threshold: tfjs.Tensor3D; scale: tfjs.Tensor3D }

interface Live { spec: RunSpec; shuffle: RandomStream; dropout: RandomStream; order?: Int32Array; best: { epoch: number; score: number; loss: number; accuracy: number } | null; epochsRun: number }

export async function trainBatched(tf: Tf, data: TrainData, runs: RunSpec[], early: EarlyStopping): Promise<BatchedSweep> {
  const { batchSize, epochs } = runs[0].params;
  for (const { key, params } of runs) {
    if (params.hiddenUnits || params.optimizer !== 'adam' || params.weightDecay || params.labelSmoothing || params.classWeight !== 'none' ||
      params.batchSize !== batchSize || params.epochs !== epochs) throw new RangeError(`${key}: the batched bench trainer takes linear adam heads of one batch size and epoch count`);
  }
  const started = performance.now();
  const { dim, classes } = data;
  const rows = data.train.y.length;
  const valX = tf.tensor2d(data.val.x, [data.val.y.length, dim]);
  const testX = tf.tensor2d(data.test.x, [data.test.y.length, dim]);
  let live: Live[] = runs.map((spec) => {
    const streams = runStreams(spec);
    return { spec, shuffle: streams.shuffle, dropout: streams.dropout, best: null, epochsRun: 0 };
  });
  const perRun = (f: (spec: RunSpec) => number) => tf.tensor3d(runs.map((r) => f(r)), [runs.length, 1, 1]);
  const kernels = runs.map((r) => glorotUniform(runStreams(r).init, dim, classes));
  const w = tf.tensor3d(concat(kernels), [runs.length, dim, classes]);
  const zerosW = () => tf.zeros([runs.length, dim, classes]) as tfjs.Tensor3D;
  const zerosB = () => tf.zeros([runs.length, 1, classes]) as tfjs.Tensor3D;
  let state: State = {
    w, b: zerosB(), mW: zerosW(), vW: zerosW(), mB: zerosB(), vB: zerosB(), bestW: w.clone(), bestB: zerosB(),
    lr: perRun((r) => r.params.learningRate),
    // keep an element iff its uniform int32 >= threshold: P(keep) = 1 - dropout
    threshold: tf.tensor3d(runs.map((r) => Math.round(-(2 ** 31) + r.params.dropout * 2 ** 32)), [runs.length, 1, 1], 'int32'),
    scale: perRun((r) => 1 / (1 - r.params.dropout)),
  };
  const finished: BatchedRunResult[] = [];
  let accBeta1 = 1;
  let accBeta2 = 1;
  let steps = 0;
  let runEpochs = 0;
  const bits = new Int32Array(runs.length * batchSize * dim);
  const bitBytes = new Uint8Array(bits.buffer);
  const batchX = new Float32Array(runs.length * batchSize * dim);
  const batchY = new Float32Array(runs.length * batchSize * classes);
  for (let epoch = 1; epoch <= epochs && live.length; epoch++) {
    for (const run of live) run.order = run.shuffle.permutation(rows);
    for (let start = 0; start < rows; start += batchSize) {
      const count = Math.min(batchSize, rows - start);
      const n = live.length;
      // rows and one-hot targets are gathered in JavaScript and uploaded: tfjs-wasm's gather
      // of [runs * batch] rows measured ~30x slower than uploading the same bytes
      live.forEach((run, r) => {
        run.order!.subarray(start, start + count).forEach((row, i) => {
          const at = r * count + i;
          batchX.set(data.train.x.subarray(row * dim, (row + 1) * dim), at * dim);
          batchY.fill(0, at * classes, (at + 1) * classes);
          batchY[at * classes + data.train.y[row]] = 1;
        });
        run.dropout.fill(bitBytes, r * count * dim * 4, count * dim * 4);
      });
      accBeta1 *= BETA1;
      accBeta2 *= BETA2;
      const next = tf.tidy(() => {
        const x = tf.tensor3d(batchX.subarray(0, n * count * dim), [n, count, dim]);
        const keep = tf.greaterEqual(tf.tensor3d(bits.subarray(0, n * count * dim), [n, count, dim], 'int32'), state.threshold);
        const dropped = tf.mul(x, tf.mul(tf.cast(keep, 'float32'), state.scale)) as tfjs.Tensor3D;
        const probabilities = tf.softmax(tf.add(tf.matMul(dropped, state.w), state.b));
        const targets = tf.tensor3d(batchY.subarray(0, n * count * classes), [n, count, classes]);
        const dLogits = tf.div(tf.sub(probabilities, targets), count) as tfjs.Tensor3D;
        const gW = tf.matMul(dropped, dLogits, true, false);
        const gB = tf.sum(dLogits, 1, true);
        const adam = (param: tfjs.Tensor3D, m: tfjs.Tensor3D, v: tfjs.Tensor3D, g: tfjs.Tensor) => {
          const mNew = tf.add(tf.mul(m, BETA1), tf.mul(g, 1 - BETA1)) as tfjs.Tensor3D;
          const vNew = tf.add(tf.mul(v, BETA2), tf.mul(tf.square(g), 1 - BETA2)) as tfjs.Tensor3D;
          const step = tf.div(tf.div(mNew, 1 - accBeta1), tf.add(tf.sqrt(tf.div(vNew, 1 - accBeta2)), EPSILON));
          return [tf.sub(param, tf.mul(step, state.lr)) as tfjs.Tensor3D, mNew, vNew] as const;
        };
        const [wNew, mW, vW] = adam(state.w, state.mW, state.vW, gW);
        const [bNew, mB, vB] = adam(state.b, state.mB, state.vB, gB);
        return { ...state, w: wNew, b: bNew, mW, vW, mB, vB };
      });
      tf.dispose([state.w, state.b, state.mW, state.vW, state.mB, state.vB]);
      state = next;
      steps++;
    }
    runEpochs += live.length;
    // validation of every live run at once: [valRows, dim] x [dim, runs * classes]
    const { loss, accuracy } = scoreAll(tf, valX, data.val.y, state.w, state.b, classes);
    const improved: boolean[] = [];
    const stays: number[] = [];
    live.forEach((run, r) => {
      run.epochsRun = epoch;
      const score = early.monitor === 'val_loss' ? -loss[r] : accuracy[r];
      const better = !run.best || score > run.best.score;
      if (better) run.best = { epoch, score, loss: loss[r], accuracy: accuracy[r] };
      improved.push(better);
      const stopped = !better && early.patience > 0 && epoch - run.best!.epoch >= early.patience;
      if (!stopped && epoch < epochs) stays.push(r);
    });
    state = keepBest(tf, state, improved);
    const leaving = live.map((_, r) => r).filter((r) => !stays.includes(r));
    if (leaving.length) {
      const test = scoreAll(tf, testX, data.test.y, pick(tf, state.bestW, leaving), pick(tf, state.bestB, leaving), classes, true);
      leaving.forEach((r, i) => {
        const run = live[r];
        finished.push({ key: run.spec.key, seed: run.spec.seed, bestEpoch: run.best!.epoch, epochsRun: run.epochsRun,
          valLoss: run.best!.loss, valAccuracy: run.best!.accuracy, testAccuracy: test.accuracy[i] });
      });
      state = compact(tf, state, stays);
      live = stays.map((r) => live[r]);
    }
  }
  tf.dispose([valX, testX, ...Object.values(state)]);
  return { seconds: (performance.now() - started) / 1000, runEpochs, steps, results: finished };
}

function concat(arrays: Float32Array[]): Float32Array {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}

/** Mean cross-entropy (clipped like Keras) and accuracy of each run on a split; test data are disposed by the caller. */
function scoreAll(tf: Tf, x: tfjs.Tensor2D, labels: Int32Array, w: tfjs.Tensor3D, b: tfjs.Tensor3D, classes: number, dispose = false): { loss: number[]; accuracy: number[] } {
  const n = w.shape[0];
  const [losses, hits] = tf.tidy(() => {
    const flat = tf.reshape(tf.transpose(w, [1, 0, 2]), [w.shape[1], n * classes]);
    const logits = tf.add(tf.reshape(tf.matMul(x, flat), [x.shape[0], n, classes]), tf.reshape(b, [1, n, classes]));
    const probabilities = tf.softmax(logits);
    const targets = tf.reshape(tf.oneHot(tf.tensor1d(labels, 'int32'), classes), [x.shape[0], 1, classes]);
    const picked = tf.sum(tf.mul(probabilities, targets), 2);
    const loss = tf.mean(tf.neg(tf.log(tf.clipByValue(picked, EPSILON, 1 - EPSILON))), 0);
    const hit = tf.mean(tf.cast(tf.equal(tf.argMax(probabilities, 2), tf.reshape(tf.tensor1d(labels, 'int32'), [-1, 1])), 'float32'), 0);
    return [loss.dataSync(), hit.dataSync()];
  });
  if (dispose) tf.dispose([w, b]);
  return { loss: [...losses], accuracy: [...hits] };
}

function keepBest(tf: Tf, state: State, improved: boolean[]): State {
  const mask = tf.tensor3d(improved.map(Number), [improved.length, 1, 1], 'bool');
  const bestW = tf.where(mask, state.w, state.bestW) as tfjs.Tensor3D;
  const bestB = tf.where(mask, state.b, state.bestB) as tfjs.Tensor3D;
  tf.dispose([mask, state.bestW, state.bestB]);
  return { ...state, bestW, bestB };
}

function pick(tf: Tf, t: tfjs.Tensor3D, runs: number[]): tfjs.Tensor3D {
  return tf.tidy(() => tf.gather(t, tf.tensor1d(runs, 'int32')) as tfjs.Tensor3D);
}

function compact(tf: Tf, state: State, stays: number[]): State {
  const next = Object.fromEntries(Object.entries(state).map(([name, t]) => [name, pick(tf, t as tfjs.Tensor3D, stays)])) as unknown as State;
  tf.dispose(Object.values(state));
  return next;
}
