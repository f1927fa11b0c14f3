/** The one worker pool (core/worker-pool.ts) that engines and the sweep trainer share, with real worker threads. */
import test, { type ExecutionContext } from 'ava';
import { PoolClosedError, startWorkerPool } from '../core/worker-pool.js';
import type { PoolTask } from './helpers/pool-worker.js';

const script = new URL('./helpers/pool-worker.js', import.meta.url);
type Reply = { value?: number; values?: Float32Array; threadId: number };
const start = async (size: number, workerData: object = {}, ready?: (message: unknown) => void) =>
  startWorkerPool<PoolTask, Reply>({ script, workerData, size, ready });

/** A pool closed when the test ends, also when an assertion throws. */
async function startFor(t: ExecutionContext, size: number, workerData: object = {}, ready?: (message: unknown) => void) {
  const started = await start(size, workerData, ready);
  t.teardown(() => started.close());
  return started;
}

test('more tasks than workers: every task answered, spread over the workers, each worker one task at a time', async (t) => {
  const pool = await startFor(t, 2);
  t.is(pool.size, 2);
  const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => pool.run({ op: 'echo', value: i, ms: 20 })));
  t.deepEqual(replies.map((r) => r.value), [0, 1, 2, 3, 4, 5, 6, 7]);
  t.is(new Set(replies.map((r) => r.threadId)).size, 2);
  await pool.close();
});

test('transferred buffers move to the worker and back', async (t) => {
  const pool = await startFor(t, 1);
  const values = Float32Array.of(1, 2, 3);
  const pending = pool.run({ op: 'double', values }, [values.buffer as ArrayBuffer]);
  t.is(values.byteLength, 0, 'moved, not copied');
  t.deepEqual([...(await pending).values!], [2, 4, 6]);
  await pool.close();
});

test('a worker that throws fails its task with its error; the others go on; with none left, tasks fail', async (t) => {
  const pool = await startFor(t, 2);
  await t.throwsAsync(pool.run({ op: 'crash' }), { message: /crashed in thread/ });
  t.is((await pool.run({ op: 'echo', value: 7 })).value, 7);
  await t.throwsAsync(pool.run({ op: 'crash' }), { message: /crashed in thread/ });
  await t.throwsAsync(pool.run({ op: 'echo', value: 8 }), { instanceOf: PoolClosedError });
  await pool.close();
});

test('close fails the running and queued tasks with PoolClosedError', async (t) => {
  const pool = await startFor(t, 1);
  const running = pool.run({ op: 'echo', value: 1, ms: 5000 });
  const queued = pool.run({ op: 'echo', value: 2 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  await pool.close();
  await t.throwsAsync(running, { instanceOf: PoolClosedError });
  await t.throwsAsync(queued, { instanceOf: PoolClosedError });
  await t.throwsAsync(pool.run({ op: 'echo', value: 3 }), { instanceOf: PoolClosedError });
});

test('ready: the pool starts once every worker says so, and fails to start when one does not', async (t) => {
  const check = (message: unknown) => {
    if (!(message as { ready: boolean }).ready) throw new Error((message as { why: string }).why);
  };
  const pool = await startFor(t, 2, { announce: true }, check);
  t.is((await pool.run({ op: 'echo', value: 5 })).value, 5);
  await pool.close();
  await t.throwsAsync(start(2, { failStart: true }, check), { message: 'told to fail' });
});
