/** model.size as a list and model.views, from the file and from flags, and their one-line errors. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { loadConfig } from '../pipeline/config.js';
import { UserError } from '../core/errors.js';
import { tempDir } from './helpers/shared.js';

function configFile(t: Parameters<typeof tempDir>[0], text: string): string {
  const file = join(tempDir(t, 'pipeline-config-views-'), 'config.yaml');
  writeFileSync(file, text);
  return file;
}

test('sizes and views from the file, overridden by comma-separated flags', (t) => {
  const file = configFile(t, 'model:\n  size: [448x597, 320x427]\n  views: [original, hflip, "crop:0.80:tl"]\n');
  const fromFile = loadConfig(file);
  t.deepEqual(fromFile.model.sizes, [{ height: 448, width: 597 }, { height: 320, width: 427 }]);
  t.deepEqual(fromFile.model.size, { height: 448, width: 597 });
  t.deepEqual(fromFile.model.views, ['original', 'hflip', 'crop:0.8:tl']);
  const flagged = loadConfig(file, { size: '224x224, 96x128', views: 'original,rot90' });
  t.deepEqual(flagged.model.sizes, [{ height: 224, width: 224 }, { height: 96, width: 128 }]);
  t.deepEqual(flagged.model.views, ['original', 'rot90']);
});

test('a bad view or size: one line naming the file position or the flag', (t) => {
  const file = configFile(t, 'model:\n  views: [original, sideways]\n');
  const inFile = t.throws(() => loadConfig(file), { instanceOf: UserError });
  t.regex(inFile!.message, /config\.yaml:2:10: model\.views: unknown view "sideways"/);
  const flag = t.throws(() => loadConfig(undefined, { views: 'hflip,crop:2:tl' }), { instanceOf: UserError });
  t.regex(flag!.message, /^--views "hflip,crop:2:tl": view "crop:2:tl": crop fraction must be > 0 and <= 1$/);
  const size = t.throws(() => loadConfig(undefined, { size: '224x224,0x0' }), { instanceOf: UserError });
  t.regex(size!.message, /^--size .*: expected HxW/);
});
