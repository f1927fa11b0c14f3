/**
 * Build step (`npm run build`, run by `npm test` and `prepare`): assembles the sweep
 * kernels' WebAssembly text into dist/stages/sweep/kernels.wasm, so that training never
 * needs wabt at run time.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import wabt from 'wabt';
import { writeFileAtomically } from '../core/files.js';
import { KERNELS_WAT } from '../stages/sweep/kernels-wat.js';
import { KERNELS_WASM } from '../stages/sweep/simd.js';

export async function assembleKernels(): Promise<Uint8Array> {
  const parsed = (await wabt()).parseWat('sweep-kernels.wat', KERNELS_WAT, { simd: true, bulk_memory: true });
  try {
    parsed.validate();
    // copied out of wabt's heap, which the bytes must not alias once it is destroyed
    return new Uint8Array(parsed.toBinary({}).buffer);
  } finally {
    parsed.destroy();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const bytes = await assembleKernels();
  await writeFileAtomically(fileURLToPath(KERNELS_WASM), bytes, 'the build');
  console.log(`assembled ${fileURLToPath(KERNELS_WASM)} (${bytes.length} bytes)`);
}
