/**
 * Backend selection for onnx-cuda: ORT's CUDA execution provider is chosen when its
 * library is installed, and otherwise the user gets one line naming what is missing.
 * No GPU and no CUDA provider exist on the machines this is built on, so the success
 * path is checked only as far as selection (see README, Backends).
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { ONNX_EXECUTION_PROVIDER, onnxBindingDir, requireCudaProvider, resolveBackend } from '../backbone/backends.js';
import { UserError } from '../core/errors.js';
import { expectOneLineError, runPipeline } from './helpers/cli.js';
import { makeDataset } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const temp = fileTempDir('pipeline-backends-');
test.after.always(() => temp.remove());

const bindingDir = onnxBindingDir();
const cudaInstalled = bindingDir !== null && existsSync(join(bindingDir, 'libonnxruntime_providers_cuda.so'));

test('onnx-cuda runs the onnx graph on the CUDA execution provider, onnx on the CPU one', (t) => {
  t.is(ONNX_EXECUTION_PROVIDER['onnx-cuda'], 'cuda');
  t.is(ONNX_EXECUTION_PROVIDER.onnx, 'cpu');
  t.truthy(bindingDir, 'onnxruntime-node has a native binding for this platform');
});

test('a CUDA provider library beside the binding selects onnx-cuda; an empty folder is one line naming the library', async (t) => {
  const withLibrary = join(temp.dir, 'with');
  const without = join(temp.dir, 'without');
  await mkdir(withLibrary, { recursive: true });
  await mkdir(without, { recursive: true });
  await writeFile(join(withLibrary, 'libonnxruntime_providers_cuda.so'), '');
  t.notThrows(() => requireCudaProvider(withLibrary));
  const error = t.throws(() => requireCudaProvider(without), { instanceOf: UserError });
  t.regex(error!.message, /^--backend onnx-cuda: ONNX Runtime's CUDA execution provider is not installed \(no libonnxruntime_providers_cuda\.so in .*without;/);
  t.false(error!.message.includes('\n'));
});

if (cudaInstalled) {
  test.skip('onnx-cuda without the CUDA provider (skipped: this machine has it installed)', () => {});
} else {
  test('onnx-cuda here: resolveBackend and `pipeline extract` fail with one line naming the missing provider', async (t) => {
    await t.throwsAsync(resolveBackend('onnx-cuda'), { instanceOf: UserError, message: /CUDA execution provider is not installed/ });
    await makeDataset(join(temp.dir, 'data'), { perClass: 2 });
    const { modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, seed: 3 });
    const r = await runPipeline(temp.dir, ['extract', '--data', 'data', '--model', modelJson, '--size', '32x32', '--backend', 'onnx-cuda', '--db', 'c.sqlite']);
    const line = expectOneLineError(t, r, 'extract --backend onnx-cuda');
    t.regex(line, /^pipeline: --backend onnx-cuda: ONNX Runtime's CUDA execution provider is not installed/);
    t.false(existsSync(join(temp.dir, 'c.sqlite')), 'nothing written before the backend is known');
  });
}
