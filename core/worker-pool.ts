/**
 * The one pool of worker threads: the backbone engines (extract) and the sweep trainer
 * both run their work through it. Each worker handles one task at a time and answers it
 * with one message; tasks wait in order for the next free worker, so a slow task never
 * holds back the others. Buffers named in `transfer` move to the worker instead of being
 * copied.
 */
import { Worker } from 'node:worker_threads';

export interface WorkerPoolOptions {
  /** The worker script (a compiled .js file). */
  readonly script: URL;
  /** Given to every worker as its `workerData`. */
  readonly workerData: unknown;
  /** Number of workers. */
  readonly size: number;
  /**
   * When set, each worker's first message says whether it started: `ready` throws if not,
   * and the pool fails to start. Without it a worker takes tasks at once.
   */
  readonly ready?: (message: unknown) => void;
}

export interface WorkerPool<Task, Result> {
  readonly size: number;
  /**
   * `task` on the next free worker; resolves with its reply. Rejects if that worker dies
   * (its error) or the pool is closed before it answers (a PoolClosedError).
   */
  run(task: Task, transfer?: readonly ArrayBuffer[]): Promise<Result>;
  /** Terminates every worker; tasks still queued or running reject with PoolClosedError. */
  close(): Promise<void>;
}

export class PoolClosedError extends Error {
  constructor() {
    super('the worker pool is closed');
    this.name = 'PoolClosedError';
  }
}

interface Job {
  task: unknown;
  transfer: readonly ArrayBuffer[];
  resolve: (result: never) => void;
  reject: (error: Error) => void;
}

/** Starts `size` workers; with `ready`, resolves once every one has said it started. */
export async function startWorkerPool<Task, Result>(options: WorkerPoolOptions): Promise<WorkerPool<Task, Result>> {
  const workers = Array.from({ length: options.size }, () => new Worker(options.script, { workerData: options.workerData }));
  if (options.ready) {
    try {
      await Promise.all(workers.map((worker) => started(worker, options.ready!)));
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.terminate()));
      throw error;
    }
  }
  const idle = [...workers];
  const queue: Job[] = [];
  const running = new Map<Worker, Job>();
  let closed = false;

  const dispatch = () => {
    while (idle.length && queue.length) {
      const worker = idle.pop()!;
      const job = queue.shift()!;
      running.set(worker, job);
      worker.postMessage(job.task, job.transfer);
    }
  };
  let alive = workers.length;
  const failQueued = () => {
    for (const job of queue.splice(0)) job.reject(new PoolClosedError());
  };
  for (const worker of workers) {
    worker.on('message', (reply: unknown) => {
      const job = running.get(worker);
      if (!job) return;
      running.delete(worker);
      idle.push(worker);
      job.resolve(reply as never);
      dispatch();
    });
    // A worker that throws is gone: its task fails with its error, and it takes no more.
    let crash: Error | undefined;
    worker.on('error', (error: unknown) => { crash = cloned(error); });
    worker.on('exit', () => {
      const job = running.get(worker);
      running.delete(worker);
      if (idle.includes(worker)) idle.splice(idle.indexOf(worker), 1);
      job?.reject(crash ?? new PoolClosedError());
      if (--alive === 0) failQueued();
    });
  }

  return {
    size: workers.length,
    run: (task, transfer = []) => {
      if (closed || alive === 0) return Promise.reject(new PoolClosedError());
      return new Promise<Result>((resolve, reject) => {
        queue.push({ task, transfer, resolve: resolve as (result: never) => void, reject });
        dispatch();
      });
    },
    async close() {
      closed = true;
      failQueued();
      await Promise.all(workers.map((worker) => worker.terminate()));
    },
  };
}

/** Resolves on the worker's first message if `ready` accepts it; rejects if it throws or the worker dies first. */
function started(worker: Worker, ready: (message: unknown) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      worker.off('error', onError);
      try {
        ready(message);
        resolve();
      } catch (error) {
        reject(error as Error);
      }
    };
    const onError = (error: unknown) => {
      worker.off('message', onMessage);
      reject(cloned(error));
    };
    worker.once('message', onMessage).once('error', onError);
  });
}

/**
 * A worker's error as a fresh Error of this thread: what a worker throws arrives as a
 * structured clone, which some checks (util.types.isNativeError) do not take for an Error.
 */
function cloned(error: unknown): Error {
  const message = (error as { message?: unknown } | null)?.message;
  return new Error(message === undefined ? String(error) : String(message));
}
