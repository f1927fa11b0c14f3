/**
 * A command's whole output reaches a pipe: `pipeline report --json` of a 48-run sweep is
 * over 64 KiB, which process.exit used to cut at the pipe's buffer.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import test from 'ava';
import { SweepSchema } from '../stages/sweep/config.js';
import { runSweep } from '../stages/sweep.js';
import { makeFeatureCache } from './helpers/feature-cache.js';
import { PIPELINE_BIN, tempDir } from './helpers/shared.js';

test('report --json over 64 KiB arrives whole through a pipe', async (t) => {
  const dir = tempDir(t);
  const { db, featureSet } = makeFeatureCache(join(dir, 'c.sqlite'), { officialSplits: true });
  const sweep = SweepSchema.parse({ parameters: { epochs: { value: 3 } } });
  await runSweep({ db, featureSet, sweep, resume: false });
  db.close();
  // A reader that starts late: the pipe's buffer fills and the rest waits in the process.
  const stdout = execFileSync('sh', ['-c', `"$0" "$1" report --json --db c.sqlite | (sleep 1; cat)`, process.execPath, PIPELINE_BIN], {
    cwd: dir,
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  t.true(stdout.length > 65536, `${stdout.length} bytes`);
  t.is((JSON.parse(stdout) as { runs: unknown[] }).runs.length, 48);
});
