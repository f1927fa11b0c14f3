/**
 * The train/val/test split a sweep trains on. The official split recorded by extract wins
 * when every image has one (TrashNet: 1768/328/431). Otherwise a stratified, seeded
 * 70/15/15 split in which byte-identical files always land in the same part, so a
 * duplicate can never leak from train into val or test.
 */
import seedrandom from 'seedrandom';
import type { ItemRow } from '../../cache/features.js';
import type { SplitRow } from '../../cache/sweeps.js';
import { type Split, byCodeUnit } from '../../data/dataset.js';

export const SEEDED_SPLIT = { seed: 0, train: 0.7, val: 0.15 } as const;
const SEEDED_SOURCE = `stratified 70/15/15, seed ${SEEDED_SPLIT.seed}, duplicates kept together`;

export function makeSplit(items: readonly ItemRow[]): SplitRow[] {
  if (items.length > 0 && items.every((item) => item.split !== null)) {
    return items.map((item) => ({ path: item.path, split: item.split as Split, source: 'official split lists' }));
  }
  // Group byte-identical files; a group is placed by the label of its first member by path.
  // Appended in place: copying a list at every append is quadratic (a minute for 100k images).
  const groups = new Map<string, ItemRow[]>();
  for (const item of [...items].sort(byPath)) append(groups, item.sha256, item);
  const byLabel = new Map<string, ItemRow[][]>();
  for (const group of groups.values()) append(byLabel, group[0].label, group);

  const rows: SplitRow[] = [];
  for (const label of [...byLabel.keys()].sort()) {
    const random = seedrandom(`split:${SEEDED_SPLIT.seed}:${label}`);
    const shuffled = shuffle(byLabel.get(label)!, random);
    const total = shuffled.reduce((n, group) => n + group.length, 0);
    let placed = 0;
    for (const group of shuffled) {
      const split: Split =
        placed < Math.round(total * SEEDED_SPLIT.train)
          ? 'train'
          : placed < Math.round(total * (SEEDED_SPLIT.train + SEEDED_SPLIT.val))
            ? 'val'
            : 'test';
      for (const item of group) rows.push({ path: item.path, split, source: SEEDED_SOURCE });
      placed += group.length;
    }
  }
  return rows.sort(byPath);
}

const byPath = (a: { path: string }, b: { path: string }) => byCodeUnit(a.path, b.path);

function append<T>(lists: Map<string, T[]>, key: string, value: T): void {
  const list = lists.get(key);
  if (list) list.push(value);
  else lists.set(key, [value]);
}

/** Fisher-Yates on a copy, with groups sorted by hash first so the input order never matters. */
function shuffle<T extends ItemRow[]>(groups: T[], random: () => number): T[] {
  const copy = [...groups].sort((a, b) => (a[0].sha256 < b[0].sha256 ? -1 : 1));
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}
