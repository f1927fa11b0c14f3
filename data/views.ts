/**
 * Views: exact geometric transforms of a decoded RGB image, so one decode gives the
 * features of the image flipped, rotated or cropped as well (augmentation from the cache).
 *
 * A view is applied to the decoded full image, before it is resized to the input size:
 * rot90 turns a 512x384 photo into 384x512, and only resizing afterwards gives every
 * view of a size the same input shape. Flips and rotations move pixels and never blend
 * them (they equal sharp's flop(), flip() and rotate(90/180/270) bitwise); a crop keeps
 * a window of the decoded pixels.
 *
 * Names: `original`, `hflip` (mirror left-right), `vflip` (upside down), `rot90`,
 * `rot180`, `rot270` (clockwise degrees), and `crop:F:POS`: the window of F times the
 * width and height (0 < F <= 1) at POS, one of center, tl, tr, bl, br.
 */

export interface RawImage {
  /** Row-major RGB, 3 bytes per pixel. */
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

export const CROP_POSITIONS = ['center', 'tl', 'tr', 'bl', 'br'] as const;
export type CropPosition = (typeof CROP_POSITIONS)[number];

export type View =
  | { readonly kind: 'original' | 'hflip' | 'vflip' | 'rot90' | 'rot180' | 'rot270'; readonly name: string }
  | { readonly kind: 'crop'; readonly name: string; readonly fraction: number; readonly position: CropPosition };

const SIMPLE = ['original', 'hflip', 'vflip', 'rot90', 'rot180', 'rot270'] as const;

export const VIEW_SYNTAX = `${SIMPLE.join(', ')} or crop:F:POS (0 < F <= 1, POS one of ${CROP_POSITIONS.join('/')}), e.g. crop:0.8:center`;

/** Parses one view name; returns an error message when malformed. The name is canonical (`crop:0.80:tl` -> `crop:0.8:tl`). */
export function parseView(text: string): View | string {
  const name = text.trim();
  if ((SIMPLE as readonly string[]).includes(name)) return { kind: name as (typeof SIMPLE)[number], name };
  const crop = /^crop:([0-9.]+):([a-z]+)$/.exec(name);
  if (crop) {
    const fraction = Number(crop[1]);
    const position = crop[2] as CropPosition;
    if (!(fraction > 0 && fraction <= 1)) return `view "${name}": crop fraction must be > 0 and <= 1`;
    if (!CROP_POSITIONS.includes(position)) return `view "${name}": crop position must be one of ${CROP_POSITIONS.join(', ')}`;
    return { kind: 'crop', name: `crop:${fraction}:${position}`, fraction, position };
  }
  return `unknown view "${name}" (expected ${VIEW_SYNTAX})`;
}

/** Parses a list of views (each once, in the order given); returns an error message for the first bad one or a duplicate. */
export function parseViews(names: readonly string[]): View[] | string {
  const views: View[] = [];
  for (const text of names) {
    const view = parseView(text);
    if (typeof view === 'string') return view;
    if (views.some((v) => v.name === view.name)) return `view "${view.name}" listed twice`;
    views.push(view);
  }
  return views.length ? views : 'at least one view is needed';
}

export const ORIGINAL: View = { kind: 'original', name: 'original' };

/** The view of `image`. `original` returns the image itself (no copy). */
export function applyView(image: RawImage, view: View): RawImage {
  const { width: w, height: h } = image;
  switch (view.kind) {
    case 'original':
      return image;
    case 'hflip':
      return remap(image, w, h, (x, y) => [w - 1 - x, y]);
    case 'vflip':
      return remap(image, w, h, (x, y) => [x, h - 1 - y]);
    case 'rot180':
      return remap(image, w, h, (x, y) => [w - 1 - x, h - 1 - y]);
    // Clockwise: the output's top row is the input's left column, read bottom to top.
    case 'rot90':
      return remap(image, h, w, (x, y) => [y, h - 1 - x]);
    case 'rot270':
      return remap(image, h, w, (x, y) => [w - 1 - y, x]);
    case 'crop':
      return crop(image, view.fraction, view.position);
  }
}

/** A new `width x height` image whose pixel (x, y) is the source pixel `from(x, y)`. */
function remap(image: RawImage, width: number, height: number, from: (x: number, y: number) => [number, number]): RawImage {
  const out = new Uint8Array(width * height * 3);
  const src = image.data;
  let o = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [sx, sy] = from(x, y);
      const s = (sy * image.width + sx) * 3;
      out[o++] = src[s];
      out[o++] = src[s + 1];
      out[o++] = src[s + 2];
    }
  }
  return { data: out, width, height };
}

function crop(image: RawImage, fraction: number, position: CropPosition): RawImage {
  const width = Math.max(1, Math.round(image.width * fraction));
  const height = Math.max(1, Math.round(image.height * fraction));
  const spareX = image.width - width;
  const spareY = image.height - height;
  const left = position === 'tl' || position === 'bl' ? 0 : position === 'tr' || position === 'br' ? spareX : spareX >> 1;
  const top = position === 'tl' || position === 'tr' ? 0 : position === 'bl' || position === 'br' ? spareY : spareY >> 1;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const start = ((top + y) * image.width + left) * 3;
    out.set(image.data.subarray(start, start + width * 3), y * width * 3);
  }
  return { data: out, width, height };
}
