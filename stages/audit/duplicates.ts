/**
 * Duplicate groups: byte-identical files (same sha256) and near duplicates (re-encoded,
 * resized, cropped or recoloured copies). A near pair needs both witnesses: the
 * embeddings must be close (the same scene to the network) and the perceptual hashes
 * close (the same picture, not merely two similar bottles). Groups are the connected
 * components of all duplicate pairs.
 */
import { hammingWords, hashWords } from '../../data/phash.js';
import type { AuditConfig } from './config.js';

export interface AuditItem {
  readonly path: string;
  readonly label: string;
  readonly split: string | null;
  readonly sha256: string;
}

export interface DuplicateGroup {
  readonly paths: string[];
  /** exact: every file has the same bytes; near: at least two differ. */
  readonly kind: 'exact' | 'near';
  /** Per path, in the same order. */
  readonly split: (string | null)[];
  readonly labels: string[];
}

export interface CandidatePair {
  readonly i: number;
  readonly j: number;
  readonly cosine: number;
}

/** Whether two different files are near duplicates, from their cosine and hash distance. */
export function isNearDuplicate(cosine: number, hamming: number, rules: AuditConfig['duplicates']): boolean {
  return (
    (cosine >= rules.cosine && hamming <= rules.phash_distance) ||
    (cosine >= rules.strong_cosine && hamming <= rules.strong_phash_distance)
  );
}

/** The smallest cosine a near pair can have: pairs below it need not be kept. */
export const candidateCosine = (rules: AuditConfig['duplicates']) => Math.min(rules.cosine, rules.strong_cosine);

/** Hamming distance of each candidate pair's hashes (65 where either hash is unknown, so no rule accepts it). */
export function pairDistances(pairs: readonly CandidatePair[], items: readonly AuditItem[], phash: ReadonlyMap<string, string>): Int32Array {
  const words = items.map((item) => {
    const hash = phash.get(item.sha256);
    return hash ? hashWords(hash) : undefined;
  });
  return Int32Array.from(pairs, ({ i, j }) => {
    const a = words[i];
    const b = words[j];
    return a && b ? hammingWords(a[0], a[1], b[0], b[1]) : 65;
  });
}

/** Groups of two or more items, largest first, then by first path; paths sorted inside a group. */
export function duplicateGroups(
  items: readonly AuditItem[],
  pairs: readonly CandidatePair[],
  distances: Int32Array,
  rules: AuditConfig['duplicates'],
): DuplicateGroup[] {
  const parent = Int32Array.from(items, (_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]];
    return i;
  };
  const union = (a: number, b: number) => {
    const ra = find(a);
    const rb = find(b);
    if (ra !== rb) parent[Math.max(ra, rb)] = Math.min(ra, rb);
  };
  const firstWithContent = new Map<string, number>();
  items.forEach((item, i) => {
    const first = firstWithContent.get(item.sha256);
    if (first === undefined) firstWithContent.set(item.sha256, i);
    else union(first, i);
  });
  pairs.forEach((pair, p) => {
    if (isNearDuplicate(pair.cosine, distances[p], rules)) union(pair.i, pair.j);
  });
  const members = new Map<number, number[]>();
  items.forEach((_, i) => {
    const root = find(i);
    const group = members.get(root);
    if (group) group.push(i);
    else members.set(root, [i]);
  });
  return [...members.values()]
    .filter((group) => group.length > 1)
    .map((group) => {
      const sorted = group.sort((a, b) => (items[a].path < items[b].path ? -1 : items[a].path > items[b].path ? 1 : 0));
      return {
        paths: sorted.map((i) => items[i].path),
        kind: new Set(sorted.map((i) => items[i].sha256)).size === 1 ? ('exact' as const) : ('near' as const),
        split: sorted.map((i) => items[i].split),
        labels: sorted.map((i) => items[i].label),
      };
    })
    .sort((a, b) => b.paths.length - a.paths.length || (a.paths[0] < b.paths[0] ? -1 : 1));
}

export interface Leak {
  /** Index into the duplicate groups. */
  readonly group: number;
  /** The distinct splits the group spans (two or more when copies cross splits). */
  readonly splits: string[];
  /** The distinct labels its copies carry (two or more when copies cross classes). */
  readonly labels: string[];
}

/** Groups whose copies sit in more than one split or carry more than one label. */
export function findLeaks(groups: readonly DuplicateGroup[]): Leak[] {
  return groups.flatMap((group, index) => {
    const splits = [...new Set(group.split.filter((s): s is string => s !== null))].sort();
    const labels = [...new Set(group.labels)].sort();
    return splits.length > 1 || labels.length > 1 ? [{ group: index, splits, labels }] : [];
  });
}

/** Test images with a copy (in their duplicate group) in train or val. */
export function testCopies(groups: readonly DuplicateGroup[]): Set<string> {
  const paths = new Set<string>();
  for (const group of groups) {
    if (!group.split.some((s) => s === 'train' || s === 'val')) continue;
    group.paths.forEach((path, i) => {
      if (group.split[i] === 'test') paths.add(path);
    });
  }
  return paths;
}
