/** Writing output files so that a failure never leaves half a file behind. */
import { rename, rm, writeFile } from 'node:fs/promises';
import { UserError, messageOf } from './errors.js';

/** Writes to a temporary name beside `path`, then renames; `flag` names the option in errors. */
export async function writeFileAtomically(path: string, data: string | Uint8Array, flag: string): Promise<void> {
  const partial = `${path}.partial-${process.pid}`;
  try {
    await writeFile(partial, data);
    await rename(partial, path);
  } catch (error) {
    await rm(partial, { force: true });
    throw new UserError(`cannot write ${path} (${flag}): ${messageOf(error).split('\n')[0]}`);
  }
}
