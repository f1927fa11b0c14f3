/**
 * An error the user can fix: bad flag, missing folder, unreachable URL. The CLI prints
 * its message as one line and exits with code 1; anything else is a bug and gets a stack.
 */
export class UserError extends Error {
  override readonly name = 'UserError';
}

/** The message of anything thrown, for one-line reports. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
