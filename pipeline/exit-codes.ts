/**
 * One exit code per kind of outcome, so scripts can tell them apart (listed in README):
 * a usage or input error a person can fix, a bug, a command that finished but could not
 * handle some of its inputs, and a stop asked for with Ctrl-C.
 */
export const EXIT = {
  ok: 0,
  /** Bad flag, config, file, database, URL or host: one line on stderr, nothing half-done. */
  userError: 1,
  /** An unexpected error (a bug): the stack is printed. */
  bug: 2,
  /** Finished, but some inputs failed (predict: files that could not be read). */
  someInputsFailed: 3,
  /** Stopped by SIGINT at a safe point; rerun (or --resume) continues. */
  interrupted: 130,
} as const;
