/**
 * The report's plots as Vega-Lite specs, and their rendering to SVG in Node: compiled to
 * Vega, run in a headless View (renderer 'none') and serialised with view.toSVG(), so the
 * HTML page needs no JavaScript to show them. Every spec builder accepts whatever the facts
 * hold (empty lists, one swept parameter or none) and never throws.
 */
import { View, parse, Error as VegaError } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ParamValue } from '../../cache/sweeps.js';
import type { ReportFacts, VariantFacts } from '../report.js';

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif';
const TEXT = '#1f2933';
const MUTED = '#52606d';
/** Colours shared with the page's CSS. */
export const COLORS = { train: '#3b82f6', val: '#ea580c', precision: '#3b82f6', recall: '#10b981', f1: '#8b5cf6' } as const;

const config = {
  font: FONT,
  background: 'white',
  padding: 4,
  view: { stroke: null },
  axis: {
    labelFontSize: 11,
    titleFontSize: 12,
    titleFontWeight: 600,
    labelColor: MUTED,
    titleColor: TEXT,
    domainColor: '#9aa5b1',
    tickColor: '#9aa5b1',
    gridColor: '#e4e7eb',
  },
  legend: { labelFontSize: 11, titleFontSize: 12, titleColor: TEXT, labelColor: MUTED },
  title: { fontSize: 13, fontWeight: 600, color: TEXT, anchor: 'start' },
} as const;

/** Sorted distinct values of one parameter; numbers numerically, missing shown as "—". */
function levels(variants: readonly VariantFacts[], name: string): string[] {
  const raw = [...new Set(variants.map((v) => v.params[name]))];
  const numeric = raw.every((value) => typeof value === 'number');
  const sorted = numeric ? (raw as number[]).sort((a, b) => a - b) : [...new Set(raw.map(label))].sort();
  return sorted.map(label);
}

/** A parameter value as a heatmap level: lists (views, sizes) joined with "+". */
export const label = (value: ParamValue | undefined): string =>
  value === undefined ? '—' : Array.isArray(value) ? value.join('+') : String(value);

/**
 * The two parameters the heatmap spans, as [rows, columns]: the first two that vary, in
 * the order parameters are listed (dropout x learning rate when both vary); dropout and
 * learning rate fill in when fewer than two vary.
 */
export function heatmapAxes(varying: readonly string[]): [string, string] {
  const axes = varying.slice(0, 2);
  for (const name of ['dropout', 'learning_rate']) if (axes.length < 2 && !axes.includes(name)) axes.push(name);
  return axes.length === 2 && axes[0] === 'learning_rate' && axes[1] === 'dropout' ? ['dropout', 'learning_rate'] : [axes[0], axes[1]];
}

/** An axis title from a parameter name: `learning_rate` -> "learning rate". */
export const axisTitle = (name: string) => name.replace(/_/g, ' ');

export interface HeatmapCell {
  /** level of the row parameter */
  readonly row: string;
  /** level of the column parameter */
  readonly column: string;
  readonly val_accuracy: number;
  readonly variants: number;
}

/** Mean validation accuracy per (row, column) cell: over seeds (already), then over other parameters. */
export function heatmapCells(variants: readonly VariantFacts[], [rowName, columnName]: readonly [string, string]): HeatmapCell[] {
  const cells = new Map<string, { row: string; column: string; sum: number; n: number }>();
  for (const v of variants) {
    const row = label(v.params[rowName]);
    const column = label(v.params[columnName]);
    const key = JSON.stringify([row, column]);
    const cell = cells.get(key) ?? { row, column, sum: 0, n: 0 };
    if (Number.isFinite(v.val_accuracy_mean)) {
      cell.sum += v.val_accuracy_mean;
      cell.n += 1;
    }
    cells.set(key, cell);
  }
  return [...cells.values()]
    .filter((c) => c.n > 0)
    .map((c) => ({ row: c.row, column: c.column, val_accuracy: c.sum / c.n, variants: c.n }));
}

/**
 * (1) Validation accuracy over two swept parameters (heatmapAxes), cells labelled with
 * their value and the winner's cell outlined. A random sweep with many distinct numeric
 * values gets a scatter instead.
 */
export function heatmapSpec(facts: ReportFacts): TopLevelSpec {
  const [rowName, columnName] = heatmapAxes(facts.varying_params);
  const cells = heatmapCells(facts.variants, [rowName, columnName]);
  const rows = levels(facts.variants, rowName);
  const columns = levels(facts.variants, columnName);
  const winner = { row: label(facts.best.params[rowName]), column: label(facts.best.params[columnName]) };
  const values = cells.map((c) => c.val_accuracy);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const mid = (lo + hi) / 2;
  const color = {
    field: 'val_accuracy',
    type: 'quantitative',
    title: 'val accuracy',
    scale: { scheme: 'blues', domain: lo === hi ? [lo - 0.01, hi + 0.01] : [lo, hi] },
    legend: { format: '.1%', direction: 'vertical', gradientLength: 120 },
  } as const;

  const numeric = (name: string) => facts.variants.every((v) => typeof v.params[name] === 'number');
  if ((rows.length > 12 || columns.length > 12) && numeric(rowName) && numeric(columnName)) {
    const logScale = (name: string) => (name === 'learning_rate' || name === 'weight_decay' ? { scale: { type: 'log' } } : {});
    const points = facts.variants.map((v) => ({ row: v.params[rowName], column: v.params[columnName], val_accuracy: v.val_accuracy_mean, rank: v.rank }));
    return {
      config,
      width: 380,
      height: 260,
      data: { values: points },
      layer: [
        {
          mark: { type: 'point', filled: true, size: 90, stroke: '#334e68', strokeWidth: 0.5 },
          encoding: {
            x: { field: 'column', type: 'quantitative', ...logScale(columnName), title: axisTitle(columnName) },
            y: { field: 'row', type: 'quantitative', ...logScale(rowName), title: axisTitle(rowName) },
            color,
          },
        },
        {
          transform: [{ filter: 'datum.rank === 1' }],
          mark: { type: 'point', size: 260, stroke: '#111', strokeWidth: 2 },
          encoding: {
            x: { field: 'column', type: 'quantitative', ...logScale(columnName) },
            y: { field: 'row', type: 'quantitative', ...logScale(rowName) },
          },
        },
      ],
    } as TopLevelSpec;
  }

  const wide = columns.some((level) => level.length > 8);
  const x = { field: 'column', type: 'ordinal', sort: columns, title: axisTitle(columnName), axis: { labelAngle: wide ? -30 : 0 } } as const;
  const y = { field: 'row', type: 'ordinal', sort: rows, title: axisTitle(rowName) } as const;
  return {
    config,
    width: { step: wide ? 90 : columns.length > 6 ? 52 : 66 },
    height: { step: rows.length > 6 ? 32 : 42 },
    data: { values: cells as unknown as Record<string, unknown>[] },
    encoding: { x, y },
    layer: [
      { mark: { type: 'rect', stroke: 'white', strokeWidth: 1.5 }, encoding: { color } },
      {
        mark: { type: 'text', fontSize: 12, fontWeight: 600 },
        encoding: {
          text: { field: 'val_accuracy', type: 'quantitative', format: '.1%' },
          color: { condition: { test: `datum.val_accuracy > ${mid}`, value: 'white' }, value: TEXT },
        },
      },
      {
        transform: [{ filter: { and: [{ field: 'row', equal: winner.row }, { field: 'column', equal: winner.column }] } }],
        mark: { type: 'rect', fill: null, stroke: '#f59e0b', strokeWidth: 3 },
      },
    ],
  } as TopLevelSpec;
}

interface CurvePoint {
  epoch: number;
  split: 'train' | 'val';
  metric: 'loss' | 'accuracy';
  value: number;
}

/** Long-format curve points; epochs are numbered from 1. */
export function curvePoints(curves: ReportFacts['best']['curves']): CurvePoint[] {
  const out: CurvePoint[] = [];
  const add = (values: readonly number[] | undefined, split: CurvePoint['split'], metric: CurvePoint['metric']) =>
    (values ?? []).forEach((value, i) => {
      if (Number.isFinite(value)) out.push({ epoch: i + 1, split, metric, value });
    });
  add(curves.train_loss, 'train', 'loss');
  add(curves.val_loss, 'val', 'loss');
  add(curves.train_accuracy, 'train', 'accuracy');
  add(curves.val_accuracy, 'val', 'accuracy');
  return out;
}

/** (2) Loss and accuracy per epoch of the winner's selected run, with the selected epoch marked. */
export function curvesSpec(facts: ReportFacts): TopLevelSpec {
  const points = curvePoints(facts.best.curves);
  const selected = facts.best.best_epoch;
  const panel = (metric: 'loss' | 'accuracy') => ({
    width: 205,
    height: 180,
    transform: [{ filter: { field: 'metric', equal: metric } }],
    layer: [
      {
        mark: { type: 'line', strokeWidth: 2, interpolate: 'monotone' },
        encoding: {
          x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { tickMinStep: 1, format: 'd' } },
          y: {
            field: 'value',
            type: 'quantitative',
            title: metric,
            scale: { zero: false },
            axis: metric === 'accuracy' ? { format: '.0%' } : {},
          },
          color: {
            field: 'split',
            type: 'nominal',
            title: null,
            scale: { domain: ['train', 'val'], range: [COLORS.train, COLORS.val] },
            legend: { orient: 'bottom', direction: 'horizontal' },
          },
        },
      },
      {
        data: { values: [{ epoch: selected }] },
        mark: { type: 'rule', strokeDash: [4, 3], color: '#6b7280' },
        encoding: { x: { field: 'epoch', type: 'quantitative' } },
      },
      {
        transform: [{ filter: { and: [{ field: 'epoch', equal: selected }, { field: 'split', equal: 'val' }] } }],
        mark: { type: 'point', filled: true, size: 70, color: COLORS.val, stroke: 'white', strokeWidth: 1 },
        encoding: { x: { field: 'epoch', type: 'quantitative' }, y: { field: 'value', type: 'quantitative' } },
      },
    ],
  });
  return {
    config,
    data: { values: points as unknown as Record<string, unknown>[] },
    hconcat: [panel('loss'), panel('accuracy')],
    resolve: { scale: { color: 'shared' } },
  } as TopLevelSpec;
}

/** (3) Counts of true (rows) vs predicted (columns), shaded by the share of the true class. */
export function confusionSpec(facts: ReportFacts): TopLevelSpec {
  const labels = facts.labels;
  const cells: { truth: string; predicted: string; count: number; share: number }[] = [];
  facts.best.confusion.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    row.forEach((count, j) => {
      if (i < labels.length && j < labels.length) cells.push({ truth: labels[i], predicted: labels[j], count, share: total ? count / total : 0 });
    });
  });
  const step = Math.max(16, Math.min(46, Math.floor(460 / Math.max(1, labels.length))));
  const showText = step >= 22;
  return {
    config,
    width: { step },
    height: { step },
    data: { values: cells },
    encoding: {
      x: { field: 'predicted', type: 'nominal', sort: labels, title: 'predicted', axis: { orient: 'top', labelAngle: -40, labelLimit: 120 } },
      y: { field: 'truth', type: 'nominal', sort: labels, title: 'true', axis: { labelLimit: 120 } },
    },
    layer: [
      {
        mark: { type: 'rect', stroke: 'white', strokeWidth: 1 },
        encoding: {
          color: {
            condition: { test: 'datum.count === 0', value: '#f5f7fa' },
            field: 'share',
            type: 'quantitative',
            title: 'row share',
            scale: { scheme: 'blues', domain: [0, 1] },
            legend: { format: '.0%', gradientLength: 120 },
          },
        },
      },
      ...(showText
        ? [
            {
              // Mistakes (off the diagonal) in red, empty cells faint.
              transform: [{ calculate: 'datum.truth !== datum.predicted && datum.count > 0', as: 'mistake' }],
              mark: { type: 'text', fontSize: step >= 34 ? 12 : 10 },
              encoding: {
                text: { field: 'count', type: 'quantitative' },
                color: {
                  condition: [
                    { test: 'datum.share > 0.5', value: 'white' },
                    { test: 'datum.mistake', value: '#b91c1c' },
                    { test: 'datum.count === 0', value: '#c4cdd5' },
                  ],
                  value: TEXT,
                },
              },
            },
          ]
        : []),
    ],
  } as TopLevelSpec;
}

/** (4) Precision, recall and F1 per class, grouped bars; the class axis shows its support. */
export function perClassSpec(facts: ReportFacts): TopLevelSpec {
  const names = facts.best.per_class.map((c) => `${c.label} (${c.support})`);
  const rows = facts.best.per_class.flatMap((c, i) => [
    { label: names[i], metric: 'precision', value: c.precision },
    { label: names[i], metric: 'recall', value: c.recall },
    { label: names[i], metric: 'F1', value: c.f1 },
  ]);
  return {
    config,
    width: 320,
    height: { step: 9 },
    data: { values: rows },
    mark: { type: 'bar', height: { band: 1 } },
    encoding: {
      y: { field: 'label', type: 'nominal', sort: names, title: 'class (support)', axis: { labelLimit: 140 }, scale: { paddingInner: 0.25 } },
      yOffset: { field: 'metric', type: 'nominal', sort: ['precision', 'recall', 'F1'] },
      x: { field: 'value', type: 'quantitative', scale: { domain: [0, 1] }, axis: { format: '.0%' }, title: null },
      color: {
        field: 'metric',
        type: 'nominal',
        title: null,
        scale: { domain: ['precision', 'recall', 'F1'], range: [COLORS.precision, COLORS.recall, COLORS.f1] },
        legend: { orient: 'bottom', direction: 'horizontal' },
      },
    },
  } as TopLevelSpec;
}

let svgCount = 0;

export interface AuditMapPoint {
  readonly path: string;
  readonly x: number;
  readonly y: number;
  readonly label: string;
  /** A test image the reported sweep's selected run got wrong. */
  readonly misclassified: boolean;
  /** A suspected label error of the audit. */
  readonly label_issue: boolean;
}

/** Colours of the map's two overlays (the page's legend repeats them). */
export const MAP_COLORS = { misclassified: '#dc2626', label_issue: '#111827' } as const;

/**
 * The audit's 2-D map: one filled point per image coloured by class (layer 0, in the
 * order given), a red ring around misclassified test images and a black diamond on
 * suspected label errors. Every mark's description is the image's path: the SVG carries
 * it as aria-label, which the page's hover script looks up.
 */
export function auditMapSpec(points: readonly AuditMapPoint[], labels: readonly string[]): TopLevelSpec {
  const position = {
    x: { field: 'x', type: 'quantitative', axis: null, scale: { zero: false, nice: false } },
    y: { field: 'y', type: 'quantitative', axis: null, scale: { zero: false, nice: false } },
    description: { field: 'path', type: 'nominal' },
  } as const;
  return {
    config,
    width: 820,
    height: 520,
    data: { values: points.map((p) => ({ ...p })) },
    layer: [
      {
        mark: { type: 'point', filled: true, size: 30, opacity: 0.8 },
        encoding: {
          ...position,
          color: { field: 'label', type: 'nominal', title: 'class', scale: { domain: [...labels], scheme: 'tableau10' } },
        },
      },
      {
        transform: [{ filter: 'datum.misclassified' }],
        mark: { type: 'point', shape: 'circle', filled: false, size: 130, strokeWidth: 1.6, color: MAP_COLORS.misclassified },
        encoding: position,
      },
      {
        transform: [{ filter: 'datum.label_issue' }],
        mark: { type: 'point', shape: 'diamond', filled: false, size: 110, strokeWidth: 1.3, color: MAP_COLORS.label_issue },
        encoding: position,
      },
    ],
  } as TopLevelSpec;
}

/**
 * Compiles a Vega-Lite spec and renders it to an SVG string in Node. The root's namespace
 * attributes are dropped (inline SVG in HTML needs none) and element ids are prefixed, so
 * several SVGs live in one page without their clip paths colliding.
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const vega = compile(spec).spec;
  const view = new View(parse(vega), { renderer: 'none', logLevel: VegaError });
  try {
    const svg = await view.toSVG();
    const prefix = `p${++svgCount}-`;
    return svg
      .replace(/^<svg([^>]*?) xmlns="[^"]*"/, '<svg$1')
      .replace(/^<svg([^>]*?) xmlns:xlink="[^"]*"/, '<svg$1')
      .replace(/ id="([^"]+)"/g, ` id="${prefix}$1"`)
      .replace(/url\(#([^)]+)\)/g, `url(#${prefix}$1)`);
  } finally {
    view.finalize();
  }
}
