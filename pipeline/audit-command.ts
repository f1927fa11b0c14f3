/**
 * `pipeline audit`: the yargs command definition. It lives beside cli.ts, which registers
 * it, and repeats the two cache flags every cache command takes (cli.ts keeps its helpers
 * private).
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from 'yargs';
import { guardStore, openStore } from '../cache/store.js';
import { UserError } from '../core/errors.js';
import type { AuditConfig } from '../stages/audit/config.js';
import { loadConfig } from './config.js';
import { startProgress } from './progress.js';
import { selectFeatureSet } from '../stages/feature-set.js';

interface AuditArgs {
  config?: string;
  db?: string;
  'feature-set'?: string;
  json?: boolean;
  top?: number;
  cosine?: number;
  'phash-distance'?: number;
  folds?: number;
}

const number = (name: string, check: (n: number) => boolean, rule: string) => (value: unknown) => {
  const n = Number(value);
  if (!Number.isFinite(n) || !check(n)) throw new UserError(`--${name} must be ${rule}, got ${JSON.stringify(value)}`);
  return n;
};

function builder(args: Argv) {
  return args
    .option('config', { type: 'string', describe: 'YAML config file (default: ./config.yaml if present)' })
    .option('db', { type: 'string', describe: 'SQLite cache file or postgres:// URL (cache.db)' })
    .option('feature-set', { type: 'string', describe: 'feature set id (default: the only one)' })
    .option('json', { type: 'boolean', describe: 'print the findings as JSON (fields in README)' })
    .option('top', { type: 'string', coerce: number('top', (n) => Number.isInteger(n) && n >= 1, 'a positive integer'), describe: 'findings listed per kind (default 10)' })
    .option('cosine', { type: 'string', coerce: number('cosine', (n) => n > 0 && n <= 1, 'in (0, 1]'), describe: 'near duplicates: minimum embedding cosine (audit.duplicates.cosine)' })
    .option('phash-distance', {
      type: 'string',
      coerce: number('phash-distance', (n) => Number.isInteger(n) && n >= 0 && n <= 64, 'an integer 0..64'),
      describe: 'near duplicates: maximum perceptual-hash distance in bits (audit.duplicates.phash_distance)',
    })
    .option('folds', { type: 'string', coerce: number('folds', (n) => Number.isInteger(n) && n >= 3 && n <= 20, 'an integer 3..20'), describe: 'label issues: k-fold heads (audit.label_issues.folds)' });
}

/** The `audit:` section as loadConfig read it (defaults where the file says nothing), then the flags. */
function auditConfig(base: AuditConfig, argv: AuditArgs): AuditConfig {
  return {
    ...base,
    duplicates: {
      ...base.duplicates,
      ...(argv.cosine !== undefined ? { cosine: argv.cosine } : {}),
      ...(argv['phash-distance'] !== undefined ? { phash_distance: argv['phash-distance'] } : {}),
    },
    label_issues: { ...base.label_issues, ...(argv.folds !== undefined ? { folds: argv.folds } : {}) },
  };
}

async function handler(argv: ArgumentsCamelCase<AuditArgs>): Promise<void> {
  const config = loadConfig(argv.config, argv);
  await guardStore(config.cache.db, async () => {
    const db = await openStore(config.cache.db);
    try {
      const { runAudit } = await import('../stages/audit.js');
      const result = await runAudit({
        db,
        featureSet: await selectFeatureSet(db, argv['feature-set']),
        config: auditConfig(config.audit, argv),
        log: (line) => void process.stderr.write(`${line}\n`),
        startProgress,
      });
      if (argv.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else {
        const { auditText } = await import('../stages/audit/text.js');
        process.stdout.write(`${auditText(result, argv.top ?? 10)}\n`);
      }
    } finally {
      await db.close();
    }
  });
}

export const auditCommand: CommandModule<object, AuditArgs> = {
  command: 'audit',
  describe: 'find duplicates, split leaks, label errors and outliers from the cached features',
  builder: builder as unknown as CommandModule<object, AuditArgs>['builder'],
  handler,
};
