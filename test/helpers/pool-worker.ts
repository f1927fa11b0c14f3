/** A worker for the worker-pool tests: answers tasks, moves buffers back, crashes on request. */
import { parentPort, threadId, workerData } from 'node:worker_threads';

export type PoolTask =
  | { op: 'echo'; value: number; ms?: number }
  | { op: 'double'; values: Float32Array }
  | { op: 'crash' };

const port = parentPort!;
if ((workerData as { failStart?: boolean }).failStart) port.postMessage({ ready: false, why: 'told to fail' });
else if ((workerData as { announce?: boolean }).announce) port.postMessage({ ready: true });

port.on('message', async (task: PoolTask) => {
  if (task.op === 'crash') throw new Error(`crashed in thread ${threadId}`);
  if (task.op === 'double') {
    for (let i = 0; i < task.values.length; i++) task.values[i] *= 2;
    port.postMessage({ values: task.values, threadId }, [task.values.buffer as ArrayBuffer]);
    return;
  }
  await new Promise((resolve) => setTimeout(resolve, task.ms ?? 0));
  port.postMessage({ value: task.value, threadId });
});
