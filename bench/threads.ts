/**
 * CPU time per thread of this process, from /proc/self/task (Linux). Node names neither
 * its libuv pool nor its worker threads, so threads are told apart by when they were
 * born: the ones that appear after `startThreadCpu` are the engine's (worker threads and
 * the pools of the library inside them); libvips names its own.
 * Threads that exit keep the last CPU time sampled (every 100 ms).
 */
import { readFileSync, readdirSync } from 'node:fs';

const TICKS_PER_SECOND = 100;

interface ThreadSample {
  readonly comm: string;
  readonly ms: number;
}

function sample(): Map<number, ThreadSample> {
  const threads = new Map<number, ThreadSample>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      // comm may hold spaces and parentheses: fields resume after the last ')'.
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const fields = stat.slice(close + 2).split(' ');
      const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14, 15)
      threads.set(Number(tid), { comm, ms: (ticks * 1000) / TICKS_PER_SECOND });
    } catch {
      // the thread exited between readdir and read
    }
  }
  return threads;
}

export type ThreadGroup = 'main JS thread' | 'libvips' | 'engine threads' | 'libuv pool + V8 helpers';

export interface ThreadCpu {
  /** CPU ms per group since start. */
  stop(): Map<ThreadGroup, { ms: number; threads: number }>;
}

export function startThreadCpu(): ThreadCpu {
  const before = sample();
  const last = new Map(before);
  const timer = setInterval(() => {
    for (const [tid, s] of sample()) last.set(tid, s);
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      for (const [tid, s] of sample()) last.set(tid, s);
      const groups = new Map<ThreadGroup, { ms: number; threads: number }>();
      for (const [tid, s] of last) {
        const ms = s.ms - (before.get(tid)?.ms ?? 0);
        const group: ThreadGroup =
          tid === process.pid ? 'main JS thread' : s.comm.startsWith('libvips') ? 'libvips' : before.has(tid) ? 'libuv pool + V8 helpers' : 'engine threads';
        const g = groups.get(group) ?? { ms: 0, threads: 0 };
        groups.set(group, { ms: g.ms + ms, threads: g.threads + (ms > 0 ? 1 : 0) });
      }
      return groups;
    },
  };
}
