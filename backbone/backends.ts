/**
 * Which engine runs the backbone. The tfjs backends all execute the same ops
 * (backbone/tfjs-backbone.ts); only the kernel library underneath changes:
 *   gpu        @tensorflow/tfjs-node-gpu (libtensorflow with CUDA), an optional dependency
 *   tensorflow @tensorflow/tfjs-node (libtensorflow on the CPU), if the user installed it
 *   wasm       @tensorflow/tfjs-backend-wasm (XNNPACK, SIMD), always installed
 *   cpu        tfjs' pure-JavaScript kernels: slow, a last resort
 * onnx is the one engine outside tfjs: onnxruntime-node runs the same network, built as
 * an ONNX graph from the same weights (backbone/onnx-graph.ts).
 * Asking for one that cannot load is an error, never a silent fallback.
 */
import { cpus } from 'node:os';
import { UserError, messageOf } from '../core/errors.js';

export const BACKENDS = ['auto', 'gpu', 'tensorflow', 'onnx', 'wasm', 'cpu'] as const;
export type BackendRequest = (typeof BACKENDS)[number];
export type Backend = Exclude<BackendRequest, 'auto'>;
/** The backends tfjs runs, and so the only ones activateBackend accepts. */
export type TfjsBackend = Exclude<Backend, 'onnx'>;

/** The npm package that provides each backend, and the tfjs backend name it registers (none for onnx). */
const PROVIDERS: { [B in Backend]: { module: string | null; tfjsName: B extends TfjsBackend ? string : null } } = {
  gpu: { module: '@tensorflow/tfjs-node-gpu', tfjsName: 'tensorflow' },
  tensorflow: { module: '@tensorflow/tfjs-node', tfjsName: 'tensorflow' },
  onnx: { module: 'onnxruntime-node', tfjsName: null },
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
  return backend === 'gpu' || backend === 'tensorflow' ? 1 : Math.max(1, cpus().length);
}

export async function resolveBackend(request: BackendRequest): Promise<ResolvedBackend> {
  if (request !== 'auto') {
    try {
      await loadProvider(request);
    } catch (error) {
      throw new UserError(`--backend ${request}: ${PROVIDERS[request].module} cannot load (${firstLine(messageOf(error))})`);
    }
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
