/**
 * The plain way to train one head at a time with tf.layers: the yardstick the sweep
 * trainer is checked against (same math with dropout 0 for every optimizer, L2, label
 * smoothing, class weights and the hidden layer, see test/trainer.test.ts) and
 * timed against (bench/sweep.ts).
 */
import type * as tfjs from '@tensorflow/tfjs';
import { EPSILON } from './head.js';
import { balancedWeights, classCounts } from './class-weights.js';
import type { EarlyStopping, HeadParams, RunSpec, SplitData, TrainData } from './types.js';

type Tf = typeof tfjs;

/** Dropout -> Dense(classes, softmax), or Dropout -> Dense(hidden, relu) -> Dropout -> Dense(classes, softmax). */
export function buildReferenceModel(tf: Tf, dim: number, classes: number, params: HeadParams, seed: number): tfjs.Sequential {
  const regularizer = () => (params.weightDecay ? tf.regularizers.l2({ l2: params.weightDecay }) : undefined);
  const dense = (units: number, activation: 'relu' | 'softmax') =>
    tf.layers.dense({ units, activation, kernelInitializer: tf.initializers.glorotUniform({ seed }), kernelRegularizer: regularizer() });
  const model = tf.sequential();
  model.add(tf.layers.dropout({ rate: params.dropout, inputShape: [dim], seed }));
  if (params.hiddenUnits) {
    model.add(dense(params.hiddenUnits, 'relu'));
    model.add(tf.layers.dropout({ rate: params.dropout, seed }));
  }
  model.add(dense(classes, 'softmax'));
  model.compile({ optimizer: referenceOptimizer(tf, params), loss: referenceLoss(tf, params.labelSmoothing), metrics: ['accuracy'] });
  return model;
}

/** tfjs' optimizers with Keras' defaults (adam: beta1 0.9, beta2 0.999, epsilon 1e-7; rmsprop: rho 0.9). */
function referenceOptimizer(tf: Tf, { optimizer, learningRate }: HeadParams): tfjs.Optimizer {
  switch (optimizer) {
    case 'adam': return tf.train.adam(learningRate, 0.9, 0.999, EPSILON);
    case 'rmsprop': return tf.train.rmsprop(learningRate, 0.9, 0, EPSILON);
    case 'sgd': return tf.train.sgd(learningRate);
  }
}

function referenceLoss(tf: Tf, smoothing: number): string | ((yTrue: tfjs.Tensor, yPred: tfjs.Tensor) => tfjs.Tensor) {
  if (!smoothing) return 'categoricalCrossentropy';
  return (yTrue, yPred) => tf.metrics.categoricalCrossentropy(
    tf.add(tf.mul(yTrue, 1 - smoothing), smoothing / yTrue.shape[1]!), yPred);
}

function oneHot(tf: Tf, labels: Int32Array, classes: number): tfjs.Tensor2D {
  return tf.tidy(() => tf.oneHot(tf.tensor1d(labels, 'int32'), classes).toFloat() as tfjs.Tensor2D);
}

/** The balanced class weights as tf.layers' classWeight option takes them. */
function balancedClassWeight(labels: Int32Array, classes: number): Record<number, number> {
  return Object.fromEntries(Array.from(balancedWeights(classCounts(labels, classes)), (weight, c) => [c, weight]));
}

export interface ReferenceResult { bestEpoch: number; epochsRun: number; valLoss: number; valAccuracy: number; testAccuracy: number; seconds: number }

/** model.fit with per-epoch validation, Keras-style early stopping with best-weight restore, then test. */
export async function trainReference(tf: Tf, data: TrainData, run: RunSpec, early: EarlyStopping): Promise<ReferenceResult> {
  const started = performance.now();
  const { params } = run;
  const model = buildReferenceModel(tf, data.dim, data.classes, params, run.seed);
  const tensors = (split: SplitData) => [tf.tensor2d(split.x, [split.y.length, data.dim]), oneHot(tf, split.y, data.classes)] as const;
  const [trainX, trainY] = tensors(data.train);
  const [valX, valY] = tensors(data.val);
  const [testX, testY] = tensors(data.test);
  let best: { epoch: number; score: number; loss: number; accuracy: number; weights: tfjs.Tensor[] } | null = null;
  let epochsRun = 0;
  await model.fit(trainX, trainY, {
    epochs: params.epochs, batchSize: params.batchSize, shuffle: true, verbose: 0, validationData: [valX, valY],
    classWeight: params.classWeight === 'balanced' ? balancedClassWeight(data.train.y, data.classes) : undefined,
    callbacks: {
      onEpochEnd: async (epoch, logs) => {
        epochsRun = epoch + 1;
        const loss = logs!.val_loss;
        const accuracy = logs!.val_acc ?? logs!.val_accuracy;
        const score = early.monitor === 'val_loss' ? -loss : accuracy;
        if (!best || score > best.score) {
          tf.dispose(best?.weights ?? []);
          best = { epoch: epochsRun, score, loss, accuracy, weights: model.getWeights().map((w) => w.clone()) };
        } else if (early.patience > 0 && epochsRun - best.epoch >= early.patience) {
          model.stopTraining = true;
        }
      },
    },
  });
  const chosen = best!;
  model.setWeights(chosen.weights);
  const [, testAccuracy] = (model.evaluate(testX, testY) as tfjs.Scalar[]).map((t) => { const v = t.dataSync()[0]; t.dispose(); return v; });
  tf.dispose([...chosen.weights, trainX, trainY, valX, valY, testX, testY]);
  model.optimizer.dispose();
  model.dispose();
  return { bestEpoch: chosen.epoch, epochsRun, valLoss: chosen.loss, valAccuracy: chosen.accuracy, testAccuracy, seconds: (performance.now() - started) / 1000 };
}

export interface BatchOrderCurves {
  /** per epoch, the batch-size-weighted mean of the training loss tf.layers reports (with smoothing, class weights and L2 penalty) */
  trainLoss: number[];
  /** per epoch, plain categorical cross-entropy on val (clipped like Keras), as the sweep trainer reports it */
  valLoss: number[];
  /** per epoch, the weights after it: kernel, bias of each dense layer in turn, Keras layout */
  weights: Float32Array[][];
}

/**
 * The reference fed a given initial state and batch order, for comparing the sweep trainer
 * step for step: `kernels` in Keras layout per dense layer (biases start at zero),
 * `orders[e]` the training-row order of epoch e + 1. Each batch is one model.fit call of one
 * batch, so class weights go through tf.layers' own classWeight path.
 */
export async function trainReferenceOnOrder(tf: Tf, data: TrainData, params: HeadParams, kernels: Float32Array[],
  orders: Int32Array[]): Promise<BatchOrderCurves> {
  const model = buildReferenceModel(tf, data.dim, data.classes, params, 0);
  const dense = model.layers.filter((layer) => layer.getClassName() === 'Dense');
  dense.forEach((layer, i) => {
    const [kernel, bias] = layer.getWeights();
    layer.setWeights([tf.tensor(kernels[i], kernel.shape), tf.zerosLike(bias)]);
  });
  const classWeight = params.classWeight === 'balanced' ? balancedClassWeight(data.train.y, data.classes) : undefined;
  const curves: BatchOrderCurves = { trainLoss: [], valLoss: [], weights: [] };
  const valX = tf.tensor2d(data.val.x, [data.val.y.length, data.dim]);
  for (const order of orders) {
    let lossSum = 0;
    for (let start = 0; start < order.length; start += params.batchSize) {
      const rows = order.subarray(start, start + params.batchSize);
      const x = tf.tensor2d(gatherRows(data.train.x, data.dim, rows), [rows.length, data.dim]);
      const y = oneHot(tf, Int32Array.from(rows, (r) => data.train.y[r]), data.classes);
      const history = await model.fit(x, y, { batchSize: rows.length, epochs: 1, shuffle: false, verbose: 0, classWeight });
      lossSum += (history.history.loss[0] as number) * rows.length;
      tf.dispose([x, y]);
    }
    curves.trainLoss.push(lossSum / order.length);
    const probabilities = tf.tidy(() => model.predict(valX) as tfjs.Tensor).dataSync();
    let valLoss = 0;
    data.val.y.forEach((label, i) => { valLoss -= Math.log(Math.min(Math.max(probabilities[i * data.classes + label], EPSILON), 1 - EPSILON)); });
    curves.valLoss.push(valLoss / data.val.y.length);
    curves.weights.push(dense.flatMap((layer) => layer.getWeights().map((w) => w.dataSync() as Float32Array)));
  }
  tf.dispose(valX);
  model.optimizer.dispose();
  model.dispose();
  return curves;
}

function gatherRows(x: Float32Array, dim: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * dim);
  rows.forEach((row, i) => out.set(x.subarray(row * dim, (row + 1) * dim), i * dim));
  return out;
}
