/** One tfjs model copy in its own thread (tfjs-backend-wasm runs single-threaded under Node). */
import * as tf from '@tensorflow/tfjs';
import { activateBackend, type TfjsBackend } from './backends.js';
import { mobilenetV2 } from './mobilenetv2.js';
import { createTfjsBackbone } from './tfjs-backbone.js';
import { serveBatches } from './worker-protocol.js';

await serveBatches(async (setup) => {
  await activateBackend(tf, setup.backend as TfjsBackend);
  const backbone = createTfjsBackbone(tf, mobilenetV2(setup.alpha), new Map(setup.layers));
  return async (pixels, count, height, width) => {
    const input = tf.tensor4d(pixels, [count, height, width, 3], 'int32');
    const features = backbone.features(input);
    const values = features.dataSync() as Float32Array;
    tf.dispose([input, features]);
    return values;
  };
});
