/**
 * The trainer's data types, shared by the main thread (trainer.ts), the worker threads
 * (worker.ts, head.ts, random.ts) and the tf.layers reference. They live in their own file
 * so that none of those imports another only for its types.
 */

export interface HeadParams {
  dropout: number;
  learningRate: number;
  epochs: number;
  batchSize: number;
  optimizer: 'adam' | 'sgd' | 'rmsprop';
  /** 0 = no hidden layer; otherwise Dropout -> Dense(hidden, relu) -> Dropout -> Dense(classes), same rate twice. Multiple of 8. */
  hiddenUnits: number;
  /** Keras l2(weightDecay) on the kernels (not biases): weightDecay * sum(w^2) added to the training loss. */
  weightDecay: number;
  labelSmoothing: number;
  classWeight: 'none' | 'balanced';
}
export interface RunSpec { key: string; params: HeadParams; seed: number }
/**
 * One split: x holds `views` rows per image, image-major (image i's views are rows
 * i * views .. i * views + views - 1, view 0 the original), y one class index per image.
 * With views > 1 (val and test only; train's views are simply more rows), a split is scored
 * on each image's probabilities averaged over its views.
 */
export interface SplitData { x: Float32Array /* n * views x dim, row-major */; y: Int32Array /* class index per image */; views?: number /* default 1 */ }
/** dim: any multiple of 8 (the SIMD kernels' block), e.g. 2560 for two concatenated 1280-d sizes. */
export interface TrainData { dim: number; classes: number; train: SplitData; val: SplitData; test: SplitData }
export interface EarlyStopping { monitor: 'val_loss' | 'val_accuracy'; patience: number } // patience 0 = off
export interface EpochCurves { trainLoss: number[]; trainAccuracy: number[]; valLoss: number[]; valAccuracy: number[] }
/** loss: mean categorical cross-entropy against the plain labels (no smoothing, no class weights). */
export interface SplitScores { loss: number; accuracy: number }
/** A split's scores over its images, with per-image predictions and probabilities averaged over views. */
export interface TestScores extends SplitScores {
  predicted: Int32Array; probabilities: Float32Array /* images x classes */;
  /** accuracy of view 0 alone (no test-time averaging); equals accuracy with one view */
  firstViewAccuracy: number;
}
export interface RunResult {
  key: string; seed: number; bestEpoch: number /* 1-based */; epochsRun: number; curves: EpochCurves;
  train: SplitScores; val: SplitScores; test: TestScores;
  /** the restored best weights, Keras names and layout: dense/kernel [dim, units], dense/bias, dense_1/... */
  weights: { name: string; shape: number[]; values: Float32Array }[];
  /** wall time of this run in its worker */
  trainSeconds: number;
}

/** What each sweep worker thread receives once, at start. */
export interface WorkerSetup { module: WebAssembly.Module; data: TrainData; early: EarlyStopping }
