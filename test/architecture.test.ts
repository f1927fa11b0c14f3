import { readFileSync } from 'node:fs';
import test from 'ava';
import { PUBLISHED_ALPHAS, convLayers, kernelShape, makeDivisible, mobilenetV2 } from '../backbone/mobilenetv2.js';
import { SHARED_MODEL_035, SHARED_MODEL_100, testWithShared } from './helpers/shared.js';

/**
 * Keras' `_make_divisible(v, 8)` outputs, computed with the Python function Keras'
 * MobileNetV2 application uses:
 *   new_v = max(8, int(v + 4) // 8 * 8); if new_v < 0.9 * v: new_v += 8
 */
const KERAS_MAKE_DIVISIBLE: ReadonlyArray<readonly [number, number]> = [
  [3, 8],
  [4, 8],
  [5, 8],
  [7, 8],
  [8, 8],
  [11.2, 16], // 32 * 0.35: rounds down to 8, which drops > 10%, so 16
  [12, 16],
  [17, 16],
  [20, 24],
  [22.4, 24],
  [33.6, 32],
  [41.6, 40],
  [44.8, 48],
  [56, 56],
  [89.6, 88],
  [124.8, 128],
  [1664, 1664],
  [1792, 1792],
];

test('makeDivisible matches Keras _make_divisible', (t) => {
  for (const [value, expected] of KERAS_MAKE_DIVISIBLE) t.is(makeDivisible(value), expected, `makeDivisible(${value})`);
});

/** Keras MobileNetV2 widths per published alpha: stem, the 7 stage outputs, the head. */
const KERAS_WIDTHS: Record<number, { stem: number; stages: number[]; head: number }> = {
  0.35: { stem: 16, stages: [8, 8, 16, 24, 32, 56, 112], head: 1280 },
  0.5: { stem: 16, stages: [8, 16, 16, 32, 48, 80, 160], head: 1280 },
  0.75: { stem: 24, stages: [16, 24, 24, 48, 72, 120, 240], head: 1280 },
  1.0: { stem: 32, stages: [16, 24, 32, 64, 96, 160, 320], head: 1280 },
  1.3: { stem: 40, stages: [24, 32, 40, 80, 128, 208, 416], head: 1664 },
  1.4: { stem: 48, stages: [24, 32, 48, 88, 136, 224, 448], head: 1792 },
};
/** Index of the last block of each of the 7 stages (repeats 1, 2, 3, 4, 3, 3, 1). */
const STAGE_ENDS = [0, 2, 5, 9, 12, 15, 16];

test('alpha 1.0 has 52 convolutions: stem, 17 blocks (the first without expand), head', (t) => {
  const arch = mobilenetV2(1.0);
  const layers = convLayers(arch);
  t.is(arch.blocks.length, 17);
  t.is(layers.length, 52);
  t.is(layers.filter((l) => l.kind === 'depthwise').length, 17);
  t.is(arch.blocks.filter((b) => b.expand === undefined).length, 1);
  t.is(arch.blocks[0].expand, undefined);
  t.is(layers[0].name, 'Conv1');
  t.is(layers[0].bnName, 'bn_Conv1');
  t.is(layers[1].name, 'expanded_conv_depthwise');
  t.is(layers[1].bnName, 'expanded_conv_depthwise_BN');
  t.is(layers[2].name, 'expanded_conv_project');
  t.is(layers[3].name, 'block_1_expand');
  t.is(layers[3].bnName, 'block_1_expand_BN');
  t.is(layers.at(-1)!.name, 'Conv_1');
  t.is(layers.at(-1)!.bnName, 'Conv_1_bn');
  t.is(new Set(layers.map((l) => l.name)).size, 52, 'layer names are unique');
  // ReLU6 after everything but the 17 linear projections.
  t.is(layers.filter((l) => l.relu6).length, 35);
  t.true(arch.blocks.every((b) => !b.project.relu6));
});

for (const alpha of PUBLISHED_ALPHAS) {
  test(`channel widths at alpha ${alpha} match Keras`, (t) => {
    const arch = mobilenetV2(alpha);
    const expected = KERAS_WIDTHS[alpha];
    t.is(arch.stem.outChannels, expected.stem);
    t.deepEqual(
      STAGE_ENDS.map((i) => arch.blocks[i].project.outChannels),
      expected.stages,
    );
    t.is(arch.head.outChannels, expected.head);
    t.is(arch.featureDim, expected.head);
    // Each layer consumes what the previous produced; expand is 6x (1x in the first block).
    const layers = convLayers(arch);
    for (let i = 1; i < layers.length; i++) t.is(layers[i].inChannels, layers[i - 1].outChannels, layers[i].name);
    for (const [i, block] of arch.blocks.entries()) {
      const input = block.expand?.inChannels ?? block.depthwise.inChannels;
      t.is(block.depthwise.inChannels, input * (i === 0 ? 1 : 6), `block ${i} expansion`);
      t.is(block.depthwise.outChannels, block.depthwise.inChannels);
    }
  });
}

test('alpha 1.0 and 0.35: Conv1 32 / 16 channels, Conv_1 1280 for both', (t) => {
  t.is(mobilenetV2(1.0).stem.outChannels, 32);
  t.is(mobilenetV2(0.35).stem.outChannels, 16);
  t.is(mobilenetV2(1.0).head.outChannels, 1280);
  t.is(mobilenetV2(0.35).head.outChannels, 1280);
  t.deepEqual(kernelShape(mobilenetV2(0.35).stem), [3, 3, 3, 16]);
  t.deepEqual(kernelShape(mobilenetV2(1.0).blocks[0].depthwise), [3, 3, 32, 1]);
  t.deepEqual(kernelShape(mobilenetV2(1.0).head), [1, 1, 320, 1280]);
});

test('residual adds exactly where Keras has block_N_add (stride 1, same width)', (t) => {
  const expected = [2, 4, 5, 7, 8, 9, 11, 12, 14, 15];
  for (const alpha of [0.35, 1.0]) {
    const arch = mobilenetV2(alpha);
    const residual = arch.blocks.flatMap((b, i) => (b.residual ? [i] : []));
    t.deepEqual(residual, expected, `alpha ${alpha}`);
    // Strides: the stem and the first block of stages 2, 3, 4 and 6 halve the size.
    const strided = arch.blocks.flatMap((b, i) => (b.depthwise.stride === 2 ? [i] : []));
    t.deepEqual(strided, [1, 3, 6, 13], `alpha ${alpha}`);
    t.is(arch.stem.stride, 2);
  }
});

/** Shapes of every kernel in a real model.json's manifest, keyed by `layer/kind`. */
function manifestShapes(modelJson: string): Map<string, number[]> {
  const json = JSON.parse(readFileSync(modelJson, 'utf8')) as { weightsManifest: { weights: { name: string; shape: number[] }[] }[] };
  const shapes = new Map<string, number[]>();
  for (const w of json.weightsManifest.flatMap((g) => g.weights)) shapes.set(w.name.split('/').slice(-2).join('/'), w.shape);
  return shapes;
}

testWithShared('every kernel shape agrees with the real shared models (alpha 1.0 and 0.35)', (t) => {
  for (const [alpha, file] of [
    [1.0, SHARED_MODEL_100],
    [0.35, SHARED_MODEL_035],
  ] as const) {
    const shapes = manifestShapes(file);
    for (const layer of convLayers(mobilenetV2(alpha))) {
      const name = `${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`;
      t.deepEqual(shapes.get(name), kernelShape(layer), `${alpha} ${name}`);
    }
  }
});
