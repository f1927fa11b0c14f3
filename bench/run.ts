/**
 * `npm run bench`: every benchmark of the project, one after another (never two at once:
 * they would share the 2 cores). `npm run bench -- NAME...` runs only those.
 */
import { run as engines } from './extract-engines.js';
import { run as extract } from './extract.js';
import { describeMachine } from './machine.js';
import { run as pgExtract } from './pg-extract.js';
import { run as pgStore } from './pg-store.js';
import { run as sweep } from './sweep.js';
import { run as trainerRecipe } from './trainer-recipe.js';
import { run as audit } from './audit.js';

interface Benchmark {
  readonly name: string;
  readonly run: () => Promise<void>;
}

const BENCHMARKS: Benchmark[] = [
  { name: 'extract', run: extract },
  { name: 'engines', run: engines },
  { name: 'sweep', run: sweep },
  { name: 'trainer-recipe', run: trainerRecipe },
  { name: 'audit', run: audit },
  { name: 'pg-store', run: pgStore },
  { name: 'pg-extract', run: pgExtract },
];

const only = process.argv.slice(2);
console.log(describeMachine());
for (const bench of BENCHMARKS) {
  if (only.length && !only.includes(bench.name)) continue;
  console.log(`\n== ${bench.name} ==`);
  await bench.run();
}
