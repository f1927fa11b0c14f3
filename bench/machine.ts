/** The facts a benchmark number is meaningless without. */
import { cpus, totalmem, release } from 'node:os';

export function describeMachine(): string {
  const cpu = cpus();
  return [
    `machine: ${cpu.length} x ${cpu[0]?.model.trim() ?? 'unknown cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `node ${process.version}, linux ${release()}, ${new Date().toISOString()}`,
  ].join('\n');
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs `work` once: its result and its wall time in seconds. */
export async function timed<T>(work: () => Promise<T> | T): Promise<{ result: T; seconds: number }> {
  const start = process.hrtime.bigint();
  const result = await work();
  return { result, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}
