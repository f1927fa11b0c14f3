/**
 * The one-file ONNX classifier (backbone/onnx-classifier.ts) against the same classifier
 * computed piece by piece (test/helpers/classifier-reference.ts): on a tiny random
 * backbone with generated images everywhere, and on the real alpha-1.0 weights with
 * TrashNet photos when ../shared exists, where it is also compared with sharp's resize
 * (what `pipeline extract` and `pipeline predict` use).
 */
import { readFile } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import sharp from 'sharp';
import { type ClassifierSpec, type DenseLayer, VIEW_NAMES, type ViewName } from '../backbone/classifier-spec.js';
import { convLayers, mobilenetV2 } from '../backbone/mobilenetv2.js';
import { CLASSIFIER_INPUT, CLASSIFIER_OUTPUT, buildClassifierOnnx } from '../backbone/onnx-classifier.js';
import { ModelProto } from '../backbone/onnx-graph.js';
import type { InputSize, ResizeMode } from '../backbone/preprocessing.js';
import { type BackboneWeights, type ConvWeights, backboneWeights, readWeightFile } from '../backbone/weights.js';
import { UserError } from '../core/errors.js';
import { scanDataset } from '../data/dataset.js';
import {
  EngineBySize,
  OnnxResizer,
  decodeFull,
  sharpResized,
  type RgbImage,
  maxAbsDiff,
  onnxResized,
  referenceClassifier,
  viewImage,
} from './helpers/classifier-reference.js';
import { pixels } from './helpers/images.js';
import { randomWeights, rng } from './helpers/random-model.js';
import { SHARED_MODEL_100, TRASHNET_DIR, testWithShared } from './helpers/shared.js';

/** Graph and reference run the same float32 ops on the same 8-bit inputs; what is left is summation order. */
const TOLERANCE = 1e-5;

/** The random alpha-0.35 backbone of test/helpers/random-model.ts as engine weights. */
function tinyBackbone(seed: number): BackboneWeights {
  const arch = mobilenetV2(0.35);
  const byName = new Map(randomWeights({ alpha: 0.35, seed }).map((a) => [a.name, a.values]));
  const layers = new Map<string, ConvWeights>();
  for (const layer of convLayers(arch)) {
    const kernel = byName.get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`)!;
    layers.set(layer.name, { kernel, bias: byName.get(`${layer.name}/bias`)! });
  }
  return { arch, layers, sha256: `random-${seed}`, source: 'test', foldedAtLoad: false };
}

interface SpecOptions {
  readonly sizes: readonly InputSize[];
  readonly resize: ResizeMode;
  readonly views: readonly ViewName[];
  readonly hidden: number;
  /** Around which value and spread to centre the features; null: no standardisation. */
  readonly standardize: { mean: number; std: number } | null;
}

/** A seeded random head (Glorot-uniform kernels) over `featureDim * sizes` inputs, 4 classes. */
function randomSpec(featureDim: number, options: SpecOptions, seed = 5): ClassifierSpec {
  const random = rng(seed);
  const uniform = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * random());
  const labels = ['cardboard', 'glass', 'metal', 'paper'];
  const dim = featureDim * options.sizes.length;
  const widths = options.hidden ? [dim, options.hidden, labels.length] : [dim, labels.length];
  const layers: DenseLayer[] = widths.slice(1).map((units, i) => {
    const inputs = widths[i];
    const bound = Math.sqrt(6 / (inputs + units));
    const activation = i === widths.length - 2 ? 'softmax' : 'relu';
    return { inputs, units, kernel: uniform(inputs * units, -bound, bound), bias: uniform(units, -0.1, 0.1), activation };
  });
  const { standardize } = options;
  return {
    labels,
    sizes: options.sizes,
    resize: options.resize,
    views: options.views,
    standardize: standardize && {
      mean: uniform(dim, standardize.mean * 0.5, standardize.mean * 1.5),
      std: uniform(dim, standardize.std * 0.5, standardize.std * 1.5),
    },
    layers,
  };
}

/** The exported model's output for one decoded image, in ONNX Runtime. */
async function runClassifier(model: Uint8Array, image: RgbImage): Promise<{ probabilities: Float32Array; dims: readonly number[] }> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(model);
  try {
    const outputs = await session.run({ [CLASSIFIER_INPUT]: new ort.Tensor('uint8', image.data, [image.height, image.width, 3]) });
    const output = outputs[CLASSIFIER_OUTPUT];
    return { probabilities: output.data as Float32Array, dims: output.dims };
  } finally {
    await session.release();
  }
}


const generated = (height: number, width: number, seed: number): RgbImage => ({ data: pixels(width, height, seed), height, width });

/** The reference's backbone for one test, closed when the test ends. */
function enginesFor(t: ExecutionContext, weights: BackboneWeights, spec: ClassifierSpec): EngineBySize {
  const engines = new EngineBySize(weights, spec.views.length);
  t.teardown(() => engines.close());
  return engines;
}

/** Builds, runs and compares with the reference; returns the reference for further checks. */
async function assertMatchesReference(t: ExecutionContext, weights: BackboneWeights, spec: ClassifierSpec, image: RgbImage, backbone: EngineBySize) {
  const resizer = await OnnxResizer.create();
  try {
    const model = buildClassifierOnnx(weights, spec);
    const { probabilities: onnx, dims } = await runClassifier(model, image);
    t.deepEqual(dims, [spec.labels.length]);
    const reference = await referenceClassifier(backbone, spec, onnxResized(resizer, image, spec.resize));
    const diff = maxAbsDiff(onnx, reference.probabilities);
    t.log(`${image.height}x${image.width} ${spec.resize}, sizes ${spec.sizes.map((s) => `${s.height}x${s.width}`).join('+')}, ` +
      `${spec.views.length} views: max abs diff ${diff.toExponential(1)}, model ${(model.length / 2 ** 20).toFixed(2)} MiB`);
    t.true(diff <= TOLERANCE, `max abs diff ${diff}`);
    t.true(Math.abs(onnx.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'probabilities sum to 1');
    return { model, onnx, reference };
  } finally {
    await resizer.release();
  }
}

/** A graph that skipped or confused a view would land on one view's output or another mix; all must differ. */
function assertViewsDiffer(t: ExecutionContext, perView: readonly Float64Array[]) {
  for (let a = 0; a < perView.length; a++) {
    for (let b = a + 1; b < perView.length; b++) {
      t.true(maxAbsDiff(perView[a], perView[b]) > 100 * TOLERANCE, `views ${a} and ${b} give the same probabilities`);
    }
  }
}

test('views by index arithmetic are sharp\'s flop, flip and clockwise rotate', async (t) => {
  const image = generated(5, 7, 3);
  const raw = () => sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } });
  const bySharp: Record<Exclude<ViewName, 'original'>, () => ReturnType<typeof sharp>> = {
    hflip: () => raw().flop(),
    vflip: () => raw().flip(),
    rot90: () => raw().rotate(90),
    rot180: () => raw().rotate(180),
    rot270: () => raw().rotate(270),
  };
  t.true(Buffer.from(viewImage(image, 'original').data).equals(image.data));
  for (const [view, make] of Object.entries(bySharp)) {
    const { data, info } = await make().raw().toBuffer({ resolveWithObject: true });
    const mine = viewImage(image, view as ViewName);
    t.deepEqual([mine.height, mine.width], [info.height, info.width], view);
    t.true(Buffer.from(mine.data).equals(data), view);
  }
});

for (const resize of ['fill', 'cover'] as const) {
  test(`tiny random model, ${resize}: two sizes x six views match the piece-by-piece reference`, async (t) => {
    const weights = tinyBackbone(11);
    const spec = randomSpec(weights.arch.featureDim, {
      sizes: [{ height: 32, width: 48 }, { height: 45, width: 40 }],
      resize,
      views: VIEW_NAMES,
      hidden: 16,
      standardize: { mean: 2, std: 1.5 },
    });
    // 50 x 70: not square, so quarter turns change the shape and cover crops differently per view.
    const { reference } = await assertMatchesReference(t, weights, spec, generated(50, 70, 21), enginesFor(t, weights, spec));
    assertViewsDiffer(t, reference.perView);
  });
}

for (const resize of ['fill', 'cover'] as const) {
  test(`tiny random model, ${resize}: crop views at every position match the reference (windows as data/views.ts cuts them)`, async (t) => {
    const weights = tinyBackbone(15);
    const spec = randomSpec(weights.arch.featureDim, {
      sizes: [{ height: 32, width: 40 }],
      resize,
      // Odd sides and fractions whose windows round: 0.55 x 71 = 39.05, 0.7 x 51 = 35.7, 0.5 x 51 = 25.5 (rounds up).
      views: ['crop:0.8:center', 'crop:0.55:tl', 'crop:0.7:tr', 'crop:0.5:bl', 'crop:0.9:br', 'crop:1:center'],
      hidden: 8,
      standardize: { mean: 2, std: 1.5 },
    });
    const image = generated(51, 71, 23);
    const { reference } = await assertMatchesReference(t, weights, spec, image, enginesFor(t, weights, spec));
    assertViewsDiffer(t, reference.perView.slice(0, 5));
    // crop:1:center is the whole image: the same probabilities as the original.
    const whole = await assertMatchesReference(t, weights, { ...spec, views: ['original'] }, image, enginesFor(t, weights, { ...spec, views: ['original'] }));
    t.true(maxAbsDiff(reference.perView[5], whole.reference.perView[0]) < 1e-9);
  });
}

test('tiny random model: one size, one rotated view, no standardisation, no hidden layer, 3x downscale', async (t) => {
  const weights = tinyBackbone(12);
  const spec = randomSpec(weights.arch.featureDim, {
    sizes: [{ height: 40, width: 32 }],
    resize: 'cover',
    views: ['rot270'],
    hidden: 0,
    standardize: null,
  });
  await assertMatchesReference(t, weights, spec, generated(97, 131, 22), enginesFor(t, weights, spec));
});

test('the backbone is stored once however many sizes run it; input and output are as documented', (t) => {
  const weights = tinyBackbone(13);
  const spec = randomSpec(weights.arch.featureDim, {
    sizes: [{ height: 32, width: 32 }, { height: 64, width: 48 }, { height: 40, width: 40 }],
    resize: 'cover',
    views: ['original', 'rot90'],
    hidden: 8,
    standardize: { mean: 1, std: 1 },
  });
  const model = ModelProto.toObject(ModelProto.decode(buildClassifierOnnx(weights, spec)), { longs: Number, defaults: true }) as {
    opset_import: { version: number }[];
    graph: {
      node: { op_type: string }[];
      initializer: { name: string }[];
      input: { name: string; type: { tensor_type: { elem_type: number; shape: { dim: { dim_value?: number; dim_param?: string }[] } } } }[];
      output: { name: string; type: { tensor_type: { elem_type: number; shape: { dim: { dim_value?: number; dim_param?: string }[] } } } }[];
    };
  };
  const convs = convLayers(weights.arch).length;
  const count = (op: string) => model.graph.node.filter((node) => node.op_type === op).length;
  t.is(count('Conv'), convs * 3, 'the backbone runs once per size');
  t.is(count('Resize'), 3 * 2, 'one resize per size and view');
  const names = model.graph.initializer.map((i) => i.name);
  t.is(new Set(names).size, names.length);
  t.is(names.filter((name) => name.endsWith('/kernel') && !name.startsWith('head/')).length, convs, 'each conv kernel stored once');
  const dims = (info: (typeof model.graph.input)[number]) => info.type.tensor_type.shape.dim.map((d) => d.dim_param || d.dim_value);
  t.is(model.graph.input[0].name, 'image');
  t.is(model.graph.input[0].type.tensor_type.elem_type, 2); // UINT8
  t.deepEqual(dims(model.graph.input[0]), ['height', 'width', 3]);
  t.is(model.graph.output[0].name, 'probabilities');
  t.is(model.graph.output[0].type.tensor_type.elem_type, 1); // FLOAT
  t.deepEqual(dims(model.graph.output[0]), [4]);
  t.is(model.opset_import[0].version, 18);
});

test('a spec that does not fit the backbone is a one-line UserError naming the field', (t) => {
  const weights = tinyBackbone(14);
  const dim = weights.arch.featureDim;
  const good = randomSpec(dim, { sizes: [{ height: 32, width: 32 }], resize: 'fill', views: ['original'], hidden: 4, standardize: { mean: 1, std: 1 } });
  const cases: [string, ClassifierSpec, RegExp][] = [
    ['standardize length', { ...good, standardize: { mean: new Float32Array(dim * 2), std: new Float32Array(dim * 2) } }, /standardize: mean and std need 1280/],
    ['zero std', { ...good, standardize: { mean: new Float32Array(dim), std: new Float32Array(dim) } }, /standardize: std\[0\] is 0/],
    ['unknown view', { ...good, views: ['original', 'rot45' as ViewName] }, /views: unknown view "rot45"/],
    ['bad crop', { ...good, views: ['crop:1.5:center'] }, /views: view "crop:1\.5:center": crop fraction must be > 0 and <= 1/],
    ['repeated view', { ...good, views: ['hflip', 'hflip'] }, /views: hflip, hflip repeats a view/],
    ['tiny size', { ...good, sizes: [{ height: 16, width: 32 }] }, /sizes: 16x32 is not an input size/],
    ['no sizes', { ...good, sizes: [] }, /sizes: expected at least one/],
    ['bad resize', { ...good, resize: 'crop' as ResizeMode }, /resize: "crop" is not one of fill, cover/],
    ['head inputs', { ...good, layers: [{ ...good.layers[0], inputs: 7 }, good.layers[1]] }, /layers\[0\]\.inputs: expected 1280/],
    ['softmax first', { ...good, layers: [{ ...good.layers[0], activation: 'softmax' }, good.layers[1]] }, /layers\[0\]\.activation: expected relu/],
    ['classes', { ...good, labels: ['a', 'b', 'c'] }, /layers: the output layer has 4 units for 3 labels/],
  ];
  t.notThrows(() => buildClassifierOnnx(weights, good));
  for (const [what, spec, message] of cases) {
    const error = t.throws(() => buildClassifierOnnx(weights, spec), { instanceOf: UserError }, what);
    t.regex(error!.message, message, what);
    t.false(error!.message.includes('\n'), what);
  }
});

/** Two TrashNet photos of different classes, decoded at full size. */
async function trashnetPhotos(): Promise<{ path: string; bytes: Buffer; image: RgbImage }[]> {
  const { items } = await scanDataset(TRASHNET_DIR);
  const picks = [items[0], items[items.length - 1]];
  return Promise.all(picks.map(async (item) => {
    const bytes = await readFile(item.absolutePath);
    return { path: item.path, bytes, image: await decodeFull(bytes) };
  }));
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] ** 2;
    nb += b[i] ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

for (const resize of ['fill', 'cover'] as const) {
  testWithShared(`real MobileNetV2 1.00, ${resize}: TrashNet photos at 224x224 + 384x512, six views, match the reference; sharp's resize compared`, async (t) => {
    const weights = await backboneWeights(await readWeightFile(SHARED_MODEL_100));
    const spec = randomSpec(weights.arch.featureDim, {
      sizes: [{ height: 224, width: 224 }, { height: 384, width: 512 }],
      resize,
      views: VIEW_NAMES,
      hidden: 32,
      // Pooled ReLU6 features of the real backbone sit around 0.2-0.5 with a similar spread.
      standardize: { mean: 0.4, std: 0.5 },
    });
    const engines = enginesFor(t, weights, spec);
    for (const photo of await trashnetPhotos()) {
      const { onnx, reference } = await assertMatchesReference(t, weights, spec, photo.image, engines);
      assertViewsDiffer(t, reference.perView);
      const viaSharp = await referenceClassifier(engines, spec, sharpResized(photo.bytes, photo.image, resize));
      const cosines = reference.features.map((f, v) => cosine(f, viaSharp.features[v]));
      const minCosine = Math.min(...cosines);
      const probabilityDiff = maxAbsDiff(onnx, viaSharp.probabilities);
      t.log(`${photo.path}: ONNX resize vs sharp resize: min feature cosine over views ${minCosine.toFixed(5)}, ` +
        `max abs probability diff ${probabilityDiff.toExponential(2)}`);
      t.true(minCosine > 0.99, `features from ONNX and sharp resizing drift apart: cosine ${minCosine}`);
    }
  });
}
