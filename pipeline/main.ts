/** Entry point of the `pipeline` binary (bin/pipeline.js). */
import * as tf from '@tensorflow/tfjs';
import { hideBin } from 'yargs/helpers';
import { main } from './cli.js';

// Production mode: no debug checks, and no advice to install tfjs-node on every run
// (the backend choice is printed by the stages themselves).
tf.enableProdMode();

const code = await main(hideBin(process.argv));
// Worker threads and sharp's pool would keep the process alive; every stage has saved its work.
process.exit(code);
