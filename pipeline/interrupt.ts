/**
 * Ctrl-C handling for long commands: the first SIGINT asks the stage to stop at a safe
 * point (after the work in flight is saved); a second one exits at once. SIGKILL needs no
 * handler: every stage commits in transactions, so a rerun resumes.
 */
import { EXIT } from './exit-codes.js';

export interface Interrupt {
  requested(): boolean;
  dispose(): void;
}

export function onInterrupt(message: string): Interrupt {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) process.stderr.write(`\n${message}\n`);
    else process.exit(EXIT.interrupted);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    requested: () => count > 0,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
