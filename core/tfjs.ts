/**
 * tfjs for the main thread, in production mode: no per-op debug checks, and no banner
 * advising tfjs-node on every run (the chosen backend is printed by the stages).
 * Worker threads import tfjs themselves.
 */
import * as tf from '@tensorflow/tfjs';

tf.enableProdMode();

export { tf };
