/**
 * The import graph of the product code, read from the TypeScript sources: layers point one
 * way (pipeline/ on top, stages/ below it, backbone/ data/ cache/ below those, core/ at the
 * bottom) and there are no cycles, type-only imports included. bench/ and test/ are tools
 * around the product and may import any of it; nothing in the product imports them.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import test from 'ava';
import { REPO_ROOT } from './helpers/shared.js';

const LAYER: Record<string, number> = { core: 0, backbone: 1, data: 1, cache: 1, stages: 2, pipeline: 3 };

function sourceFiles(dir: string): string[] {
  return readdirSync(join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Relative imports of a file (static, dynamic, re-exports, `import type`), as repo paths of .ts files. */
function importsOf(file: string, source: string): string[] {
  const specifiers = [...source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm)].map((m) => m[1]);
  return specifiers.map((spec) => normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts'));
}

const files = Object.keys(LAYER).flatMap(sourceFiles);
const graph = new Map(files.map((file) => [file, importsOf(file, readFileSync(join(REPO_ROOT, file), 'utf8'))]));
const layerOf = (file: string) => LAYER[file.split('/')[0]];

test('every product file imports only its own layer or the layers below it', (t) => {
  t.true(files.length > 40, `found ${files.length} source files`);
  const upward: string[] = [];
  for (const [file, imports] of graph) {
    for (const target of imports) {
      if (!(target.split('/')[0] in LAYER)) upward.push(`${file} -> ${target} (outside the product)`);
      else if (layerOf(target) > layerOf(file)) upward.push(`${file} -> ${target}`);
    }
  }
  t.deepEqual(upward, []);
});

/** Each cycle of `graph` found by a depth-first walk, as `a -> b -> a`. */
function cyclesOf(graph: Map<string, string[]>): string[] {
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]) => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'open') {
      cycles.push([...path.slice(path.indexOf(file)), file].map((f) => relative('.', f)).join(' -> '));
      return;
    }
    state.set(file, 'open');
    for (const target of graph.get(file) ?? []) visit(target, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of graph.keys()) visit(file, []);
  return cycles;
}

test('the import graph has no cycles, type-only imports included', (t) => {
  t.deepEqual(cyclesOf(graph), []);
});
