/** Entry point of the `pipeline` binary (bin/pipeline.js). */
import { hideBin } from 'yargs/helpers';
import { main } from './cli.js';

const code = await main(hideBin(process.argv));
// Worker threads and sharp's pool would keep the process alive; every stage has saved its work.
// Writes to a pipe are asynchronous and process.exit drops what is still queued (a
// `report --json | jq` lost everything after 64 KiB): let stdout and stderr drain first.
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise<void>((resolve) => stream.write('', () => resolve()))));
process.exit(code);
