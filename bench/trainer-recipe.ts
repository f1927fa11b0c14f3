/**
 * The cost of the head recipe a multi-view, multi-size sweep needs: 1768 images x 4 views =
 * 7072 train rows of 2560 floats (two 1280-d sizes concatenated), val and test with 4 views
 * per image, Adam lr 1e-3, batch 128, L2 1e-4, dropout 0.2, 30 epochs; one hidden layer of
 * 512 relu units, and the linear head on the same data. Generated features (the timing does
 * not depend on their values). Runs train without early stopping, 1 and 1 + TIMED_EPOCHS
 * epochs; the difference gives the cost per epoch, scaled to the recipe's 30.
 */
import type { HeadParams, RunSpec, TrainData } from '../stages/sweep/trainer.js';
import { trainHeads } from '../stages/sweep/trainer.js';
import { measure } from './sweep.js';
import { syntheticData } from '../test/helpers/synthetic.js';

const VIEWS = 4;
const IMAGES = { train: 1768, val: 328, test: 431 };
const DIM = 2560;
const RECIPE_EPOCHS = 30;
/** Epochs timed beyond the first: the linear head's epoch is cheap, so it needs more to rise above noise. */
const TIMED_EPOCHS = (hiddenUnits: number) => (hiddenUnits ? 3 : 15);
const RECIPE: HeadParams = {
  dropout: 0.2, learningRate: 0.001, epochs: 1, batchSize: 128, optimizer: 'adam',
  hiddenUnits: 512, weightDecay: 1e-4, labelSmoothing: 0, classWeight: 'none',
};

function recipeData(): TrainData {
  const rows = syntheticData({ train: IMAGES.train * VIEWS, val: IMAGES.val * VIEWS, test: IMAGES.test * VIEWS }, DIM);
  const perImage = (y: Int32Array) => y.filter((_, i) => i % VIEWS === 0);
  return {
    ...rows,
    val: { x: rows.val.x, y: perImage(rows.val.y), views: VIEWS },
    test: { x: rows.test.x, y: perImage(rows.test.y), views: VIEWS },
  };
}

export async function run(): Promise<void> {
  const data = recipeData();
  console.log(`generated features: ${data.train.y.length} train rows (${IMAGES.train} images x ${VIEWS} views), ` +
    `val ${IMAGES.val} x ${VIEWS}, test ${IMAGES.test} x ${VIEWS}, dim ${DIM}; batch ${RECIPE.batchSize}, adam, L2, dropout ${RECIPE.dropout}; ` +
    `per-epoch cost = (time of 1 + T epochs - time of 1 epoch) / T (T = 3 hidden, 15 linear), one-time cost = the rest of the 1-epoch time`);
  for (const hiddenUnits of [512, 0]) {
    const timed = TIMED_EPOCHS(hiddenUnits);
    for (const workers of [1, 2]) {
      const timeEpochs = async (epochs: number) => {
        const runs: RunSpec[] = Array.from({ length: workers }, (_, i) => ({ key: `recipe-${hiddenUnits}`, seed: i + 1, params: { ...RECIPE, hiddenUnits, epochs } }));
        return measure(() => trainHeads(data, runs, { monitor: 'val_loss', patience: 0 }, { workers }));
      };
      const [short, long] = [await timeEpochs(1), await timeEpochs(1 + timed)];
      // per run: workers runs train at once
      const perEpoch = { wall: (long.wall - short.wall) / timed / workers, cpu: (long.cpu - short.cpu) / timed / workers };
      const setup = { wall: short.wall / workers - perEpoch.wall, cpu: short.cpu / workers - perEpoch.cpu };
      const run = (k: 'wall' | 'cpu') => (setup[k] + RECIPE_EPOCHS * perEpoch[k]).toFixed(1);
      console.log(`${hiddenUnits ? `hidden ${hiddenUnits} relu` : 'linear head'}, ${workers} worker thread${workers > 1 ? 's' : ''}: ` +
        `per run ${perEpoch.cpu.toFixed(2)} CPU s (${perEpoch.wall.toFixed(2)} s wall) per epoch + ${setup.cpu.toFixed(1)} CPU s (${setup.wall.toFixed(1)} s wall) once ` +
        `= ${run('cpu')} CPU s, ${run('wall')} s wall per ${RECIPE_EPOCHS}-epoch run`);
    }
  }
}
