/**
 * Progress for long loops: a live bar with rate and ETA on a terminal, and a plain line
 * every few seconds otherwise, so CI logs stay readable. Both go to stderr.
 */
import cliProgress from 'cli-progress';
import type { Progress } from '../core/log.js';


const PLAIN_INTERVAL_MS = 5000;

export function startProgress(label: string, total: number, unit: string): Progress {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} {bar} {value}/{total} | {rate} ${unit}/s | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    const started = performance.now();
    let done = 0;
    bar.start(total, 0, { rate: '-' });
    return {
      advance(count) {
        done += count;
        bar.update(done, { rate: ((done * 1000) / (performance.now() - started)).toFixed(1) });
      },
      stop: () => bar.stop(),
    };
  }
  const started = performance.now();
  let lastPrinted = started;
  let done = 0;
  return {
    advance(count) {
      done += count;
      const now = performance.now();
      if (now - lastPrinted < PLAIN_INTERVAL_MS && done < total) return;
      lastPrinted = now;
      const rate = (done * 1000) / (now - started);
      const eta = rate > 0 ? Math.round((total - done) / rate) : 0;
      process.stderr.write(`${label} ${done}/${total} (${rate.toFixed(1)} ${unit}/s, ETA ${eta}s)\n`);
    },
    stop() {},
  };
}
