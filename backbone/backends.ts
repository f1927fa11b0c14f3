/**
 * Which engine runs the backbone. The tfjs backends all execute the same ops
 * (backbone/tfjs-backbone.ts); only the kernel library underneath changes:
 *   gpu        @tensorflow/tfjs-node-gpu (libtensorflow with CUDA), an optional dependency
 *   tensorflow @tensorflow/tfjs-node (libtensorflow on the CPU), if the user installed it
 *   wasm       @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD), always installed
 *   cpu        tfjs' pure-JavaScript kernels: slow, a last resort
 * onnx is the one engine outside tfjs: onnxruntime-node runs the same network, built as
 * an ONNX graph from the same weights (backbone/onnx-graph.ts); onnx-cuda is that graph
 * on ORT's CUDA execution provider, whose library npm installs only on request.
 * Asking for one that cannot load is an error, never a silent fallback.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { UserError, messageOf } from '../core/errors.js';

export const BACKENDS = ['auto', 'gpu', 'tensorflow', 'onnx', 'onnx-cuda', 'wasm', 'cpu'] as const;
export type BackendRequest = (typeof BACKENDS)[number];
export type Backend = Exclude<BackendRequest, 'auto'>;
export type OnnxBackend = Extract<Backend, 'onnx' | 'onnx-cuda'>;
/** The backends tfjs runs, and so the only ones activateBackend accepts. */
export type TfjsBackend = Exclude<Backend, OnnxBackend>;

export const isOnnx = (backend: Backend): backend is OnnxBackend => backend === 'onnx' || backend === 'onnx-cuda';

/** ORT's execution provider for each onnx backend. */
export const ONNX_EXECUTION_PROVIDER: { [B in OnnxBackend]: 'cpu' | 'cuda' } = { onnx: 'cpu', 'onnx-cuda': 'cuda' };

/** The npm package that provides each backend, and the tfjs backend name it registers (none for onnx). */
const PROVIDERS: { [B in Backend]: { module: string | null; tfjsName: B extends TfjsBackend ? string : null } } = {
  gpu: { module: '@tensorflow/tfjs-node-gpu', tfjsName: 'tensorflow' },
  tensorflow: { module: '@tensorflow/tfjs-node', tfjsName: 'tensorflow' },
  onnx: { module: 'onnxruntime-node', tfjsName: null },
  'onnx-cuda': { module: 'onnxruntime-node', tfjsName: null },
  wasm: { module: '@tensorflow/tfjs-backend-wasm', tfjsName: 'wasm' },
  cpu: { module: null, tfjsName: 'cpu' },
};

export interface ResolvedBackend<B extends Backend = Backend> {
  readonly backend: B;
  /** Why this backend was chosen, printed for the user. */
  readonly reason: string;
  /** Model copies run in parallel (workersFor). */
  readonly workers: number;
}

async function loadProvider(backend: Backend): Promise<void> {
  const { module } = PROVIDERS[backend];
  if (module) await import(module);
}

/** The CUDA provider library ORT loads for the `cuda` execution provider. */
const CUDA_PROVIDER_LIBRARY = 'libonnxruntime_providers_cuda.so';

/**
 * Throws the one-line reason onnx-cuda cannot run when ORT's CUDA provider library is not
 * beside its native binding in `bindingDir` (npm skips it unless asked: see .npmrc).
 * A present library on a machine without a GPU fails later, when the session starts.
 */
export function requireCudaProvider(bindingDir: string | null): void {
  if (bindingDir && existsSync(join(bindingDir, CUDA_PROVIDER_LIBRARY))) return;
  throw new UserError(
    `--backend onnx-cuda: ONNX Runtime's CUDA execution provider is not installed (no ${CUDA_PROVIDER_LIBRARY} in ${bindingDir ?? 'onnxruntime-node'}; ` +
      'with an NVIDIA GPU run `npm rebuild onnxruntime-node --onnxruntime-node-install=cuda12`)',
  );
}

/** Where onnxruntime-node keeps its native binding for this platform (bin/napi-vN/PLATFORM/ARCH). */
export function onnxBindingDir(): string | null {
  const bin = join(dirname(createRequire(import.meta.url).resolve('onnxruntime-node')), '..', 'bin');
  if (!existsSync(bin)) return null;
  for (const napi of readdirSync(bin).sort().reverse()) {
    const dir = join(bin, napi, process.platform, process.arch);
    if (existsSync(join(dir, 'onnxruntime_binding.node'))) return dir;
  }
  return null;
}

/** Imports the provider and switches tfjs to it, in whichever thread calls it. */
export async function activateBackend(tf: typeof import('@tensorflow/tfjs'), backend: TfjsBackend): Promise<void> {
  await loadProvider(backend);
  const ok = await tf.setBackend(PROVIDERS[backend].tfjsName);
  if (!ok) throw new UserError(`backend ${backend} registered but failed to initialise`);
  await tf.ready();
}

/**
 * One engine copy per core for wasm and cpu (single-threaded each) and for onnx: one ORT
 * session per core with one thread each runs images in parallel instead of ops, as fast
 * as one session over all cores when alone, and much faster beside the decoding threads,
 * which would stall a multi-threaded session's per-op barriers. libtensorflow threads itself.
 */
function workersFor(backend: Backend): number {
  return backend === 'gpu' || backend === 'tensorflow' || backend === 'onnx-cuda' ? 1 : Math.max(1, cpus().length);
}

export async function resolveBackend(request: BackendRequest): Promise<ResolvedBackend> {
  if (request !== 'auto') {
    try {
      await loadProvider(request);
    } catch (error) {
      throw new UserError(`--backend ${request}: ${PROVIDERS[request].module} cannot load (${firstLine(messageOf(error))})`);
    }
    if (request === 'onnx-cuda') requireCudaProvider(onnxBindingDir());
    return { backend: request, reason: 'requested with --backend', workers: workersFor(request) };
  }
  const passedOver: string[] = [];
  for (const backend of ['gpu', 'tensorflow', 'onnx', 'wasm'] as const) {
    try {
      await loadProvider(backend);
      const reason = passedOver.length ? `auto: ${passedOver.join('; ')}` : `auto: ${PROVIDERS[backend].module} loaded`;
      return { backend, reason, workers: workersFor(backend) };
    } catch {
      passedOver.push(`${PROVIDERS[backend].module} not available`);
    }
  }
  return { backend: 'cpu', reason: `auto: ${passedOver.join('; ')}`, workers: workersFor('cpu') };
}

const firstLine = (text: string) => text.split('\n')[0];
