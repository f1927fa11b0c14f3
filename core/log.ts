/**
 * How stages talk to the person running them. The CLI (pipeline/) passes implementations
 * in; stages, data and backbone code never write to stderr themselves, so every line is
 * printed once, by whoever owns the terminal, and tests can capture it.
 */
export type Log = (line: string) => void;

export interface Progress {
  advance(count: number): void;
  stop(): void;
}

/** Starts a progress display for `total` units of `unit` (images, bytes). */
export type StartProgress = (label: string, total: number, unit: string) => Progress;

/** For callers that want silence (tests, benchmarks). */
export const quietLog: Log = () => {};
export const noProgress: StartProgress = () => ({ advance() {}, stop() {} });
