/**
 * Figures of the fault-injection suite: each test records (case, tries, result, held) and
 * every test file writes its rows to test-results/fault/<file>.json when it ends. Running
 * this module prints the combined Markdown table for the README:
 *
 *   node dist/test/helpers/fault-figures.js
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The checkout (found like shared.ts does, without importing ava, so this file also runs as a script). */
function repoRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'pipeline') return dir;
    if (dirname(dir) === dir) throw new Error('cannot find the pipeline repository root');
  }
}

export interface FigureRow {
  /** Sorts the table; e.g. "1.03 text file named .jpg". */
  readonly case: string;
  readonly tries: number;
  /** What happened, in a few words. */
  readonly result: string;
  /** Whether the requirement held (never true for a case that did not run). */
  readonly held: boolean;
  /** Set when the case could not run here: the table prints it as not held. */
  readonly skipped?: boolean;
}

export const FIGURES_DIR = join(repoRoot(), 'test-results', 'fault');

export class Figures {
  private readonly rows: FigureRow[] = [];
  constructor(private readonly name: string) {}

  add(row: FigureRow): void {
    this.rows.push(row);
  }

  /** Records a case that could not run here: 0 tries, not held, with the reason. */
  skip(name: string, reason: string): void {
    this.rows.push({ case: name, tries: 0, result: `not run: ${reason}`, held: false, skipped: true });
  }

  /** Writes test-results/fault/<name>.json (called from test.after.always). */
  write(): void {
    mkdirSync(FIGURES_DIR, { recursive: true });
    const rows = [...this.rows].sort((a, b) => a.case.localeCompare(b.case, 'en', { numeric: true }));
    writeFileSync(join(FIGURES_DIR, `${this.name}.json`), `${JSON.stringify({ file: this.name, written: new Date().toISOString(), rows }, null, 2)}\n`);
  }
}

/** The Markdown table of every figures file, ordered by case. */
export function figuresTable(dir = FIGURES_DIR): string {
  const rows: FigureRow[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    rows.push(...(JSON.parse(readFileSync(join(dir, file), 'utf8')) as { rows: FigureRow[] }).rows);
  }
  rows.sort((a, b) => a.case.localeCompare(b.case, 'en', { numeric: true }));
  const escape = (s: string) => s.replace(/\|/g, '\\|');
  return [
    '| case | tries | result | held |',
    '|---|---:|---|---|',
    ...rows.map((r) => `| ${escape(r.case)} | ${r.tries} | ${escape(r.result)} | ${r.skipped ? '**no** (skipped)' : r.held ? 'yes' : '**no**'} |`),
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`${figuresTable(process.argv[2])}\n`);
}
