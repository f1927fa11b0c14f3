/** Entry point of the `pipeline` binary (bin/pipeline.js). */
import { hideBin } from 'yargs/helpers';
import { main } from './cli.js';

const code = await main(hideBin(process.argv));
// Worker threads and sharp's pool would keep the process alive; every stage has saved its work.
process.exit(code);
