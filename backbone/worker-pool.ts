/** Engine threads (worker-protocol.ts), fed batches as they free up. */
import { Worker } from 'node:worker_threads';
import { UserError } from '../core/errors.js';
import type { Engine } from './engine-interface.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './worker-protocol.js';

interface Job {
  id: number;
  pixels: Uint8Array;
  count: number;
  height: number;
  width: number;
  resolve: (result: { features: Float32Array; buffer: Uint8Array }) => void;
  reject: (error: Error) => void;
}

/** Starts `count` copies of the worker script and resolves once every one is warmed up. */
export async function startWorkerPool(script: URL, setup: WorkerSetup, count: number): Promise<Engine> {
  const workers = await Promise.all(Array.from({ length: count }, () => startWorker(script, setup)));
  const idle = [...workers];
  const queue: Job[] = [];
  const running = new Map<Worker, Job>();
  let nextId = 0;
  let closed = false;

  const dispatch = () => {
    while (idle.length && queue.length) {
      const worker = idle.pop()!;
      const job = queue.shift()!;
      running.set(worker, job);
      worker.postMessage({ id: job.id, pixels: job.pixels, count: job.count, height: job.height, width: job.width } satisfies WorkerRequest, [job.pixels.buffer as ArrayBuffer]);
    }
  };
  for (const worker of workers) {
    worker.on('message', (reply: WorkerReply) => {
      const job = running.get(worker);
      if (!job || (reply.type !== 'features' && reply.type !== 'error')) return;
      running.delete(worker);
      idle.push(worker);
      if (reply.type === 'features') job.resolve({ features: reply.features, buffer: reply.pixels });
      else job.reject(new Error(`backbone failed: ${reply.message}`));
      dispatch();
    });
    worker.on('error', (error) => {
      const job = running.get(worker);
      running.delete(worker);
      job?.reject(new Error(`backbone worker crashed: ${error.message}`));
    });
  }

  const runInPlace: Engine['runInPlace'] = (buffer, count, size = setup) => {
    if (closed) return Promise.reject(new Error('the engine is closed'));
    if (buffer.byteOffset !== 0 || buffer.byteLength !== buffer.buffer.byteLength) {
      return Promise.reject(new Error('runInPlace needs a buffer that is a whole ArrayBuffer'));
    }
    return new Promise((resolve, reject) => {
      queue.push({ id: nextId++, pixels: buffer, count, height: size.height, width: size.width, resolve, reject });
      dispatch();
    });
  };
  return {
    parallelism: workers.length,
    runInPlace,
    run: (pixels, count) => runInPlace(pixels.slice(), count).then(({ features }) => features),
    async close() {
      closed = true;
      await Promise.all(workers.map((worker) => worker.terminate()));
    },
  };
}

function startWorker(script: URL, setup: WorkerSetup): Promise<Worker> {
  const worker = new Worker(script, { workerData: setup });
  return new Promise((resolve, reject) => {
    const fail = (message: string) => {
      void worker.terminate();
      reject(new UserError(`backend ${setup.backend} failed to start: ${message.split('\n')[0]}`));
    };
    worker.once('message', (reply: WorkerReply) => {
      if (reply.type === 'ready') resolve(worker);
      else fail(reply.type === 'failed' ? reply.message : `unexpected ${reply.type}`);
    });
    worker.once('error', (error) => fail(error.message));
  });
}
