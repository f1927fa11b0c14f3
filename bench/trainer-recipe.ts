/**
 * The cost of the head recipe a multi-view, multi-size sweep needs: 1768 images x 4 views =
 * 7072 train rows of 2560 floats (two 1280-d sizes concatenated), val and test with 4 views
 * per image, Adam lr 1e-3, batch 128, L2 1e-4, dropout 0.2, 30 epochs; one hidden layer of
 * 512 relu units, and the linear head on the same data. Generated features (the timing does
 * not depend on their values). Each run trains TIMED_EPOCHS epochs without early stopping;
 * seconds per epoch are scaled to the recipe's 30.
 */
import type { HeadParams, RunSpec, TrainData } from '../stages/sweep/trainer.js';
import { trainHeads } from '../stages/sweep/trainer.js';
import { median } from './machine.js';
import { syntheticData } from './sweep.js';

const VIEWS = 4;
const IMAGES = { train: 1768, val: 328, test: 431 };
const DIM = 2560;
const RECIPE_EPOCHS = 30;
const TIMED_EPOCHS = Number(process.env.RECIPE_EPOCHS ?? 3);
const RECIPE: HeadParams = {
  dropout: 0.2, learningRate: 0.001, epochs: TIMED_EPOCHS, batchSize: 128, optimizer: 'adam',
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
    `${TIMED_EPOCHS} epochs timed per run, scaled to ${RECIPE_EPOCHS}`);
  for (const hiddenUnits of [512, 0]) {
    for (const workers of [1, 2]) {
      const runs: RunSpec[] = Array.from({ length: workers }, (_, i) => ({ key: `recipe-${hiddenUnits}`, seed: i + 1, params: { ...RECIPE, hiddenUnits } }));
      const started = performance.now();
      const results = await trainHeads(data, runs, { monitor: 'val_loss', patience: 0 }, { workers });
      const wall = (performance.now() - started) / 1000;
      const perRun = median(results.map((r) => r.trainSeconds));
      console.log(`${hiddenUnits ? `hidden ${hiddenUnits} relu` : 'linear head'}, ${workers} worker thread${workers > 1 ? 's' : ''} ` +
        `(${workers} run${workers > 1 ? 's' : ''} at once): ${(perRun / TIMED_EPOCHS).toFixed(2)} s per epoch per run ` +
        `= ${(perRun / TIMED_EPOCHS * RECIPE_EPOCHS).toFixed(1)} s per ${RECIPE_EPOCHS}-epoch run; ` +
        `${(wall / TIMED_EPOCHS * RECIPE_EPOCHS / workers).toFixed(1)} s of wall time per run (wall ${wall.toFixed(1)} s)`);
    }
  }
}
