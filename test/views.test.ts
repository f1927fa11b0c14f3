/**
 * Views are exact transforms of the decoded pixels: flips and rotations equal sharp's own
 * flop(), flip() and rotate() of the same image bitwise, crops keep the right window,
 * and bad names are one-line messages.
 */
import test from 'ava';
import sharp, { type Sharp } from 'sharp';
import { decodeSources } from '../data/images.js';
import { type View, applyView, parseView, parseViews } from '../data/views.js';
import { encode, pixels } from './helpers/images.js';

const W = 37;
const H = 23;

async function decoded() {
  const jpeg = await encode(pixels(W, H, 7, [120, 90, 160]), W, H, 'jpeg');
  const { sources } = await decodeSources(jpeg, [{ height: 64, width: 64 }]);
  return { jpeg, source: sources[0] };
}

const view = (name: string) => parseView(name) as View;

test('hflip, vflip, rot90, rot180, rot270 of the decoded pixels equal sharp flop, flip and rotate of the same image', async (t) => {
  const { jpeg, source } = await decoded();
  t.is(source.width, W);
  t.is(source.height, H);
  const cases: [string, (s: Sharp) => Sharp][] = [
    ['hflip', (s) => s.flop()],
    ['vflip', (s) => s.flip()],
    ['rot90', (s) => s.rotate(90)],
    ['rot180', (s) => s.rotate(180)],
    ['rot270', (s) => s.rotate(270)],
  ];
  for (const [name, transform] of cases) {
    const ours = applyView(source, view(name));
    const { data, info } = await transform(sharp(jpeg)).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    t.is(ours.width, info.width, name);
    t.is(ours.height, info.height, name);
    t.true(Buffer.from(ours.data).equals(data), `${name} is bitwise sharp's`);
  }
  t.is(applyView(source, view('original')), source);
});

test('crops keep the window at the named position', async (t) => {
  const { source } = await decoded();
  const at = (img: { data: Uint8Array; width: number }, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];
  const tl = applyView(source, view('crop:0.5:tl'));
  t.is(tl.width, Math.round(W * 0.5));
  t.is(tl.height, Math.round(H * 0.5));
  t.deepEqual(at(tl, 0, 0), at(source, 0, 0));
  const br = applyView(source, view('crop:0.5:br'));
  t.deepEqual(at(br, br.width - 1, br.height - 1), at(source, W - 1, H - 1));
  const center = applyView(source, view('crop:0.8:center'));
  const left = (W - center.width) >> 1;
  const top = (H - center.height) >> 1;
  t.deepEqual(at(center, 0, 0), at(source, left, top));
  t.true(Buffer.from(applyView(source, view('crop:1:center')).data).equals(Buffer.from(source.data)));
});

test('view names: canonical crops, one-line errors for unknown names, bad fractions and duplicates', (t) => {
  t.is(view('crop:0.80:tl').name, 'crop:0.8:tl');
  t.regex(parseView('mirror') as string, /^unknown view "mirror" \(expected original, hflip/);
  t.regex(parseView('crop:0:tl') as string, /crop fraction must be > 0 and <= 1/);
  t.regex(parseView('crop:1.5:tl') as string, /crop fraction/);
  t.regex(parseView('crop:0.5:middle') as string, /crop position must be one of center, tl, tr, bl, br/);
  t.regex(parseViews(['hflip', 'hflip']) as string, /listed twice/);
  t.deepEqual((parseViews(['original', 'rot90']) as View[]).map((v) => v.name), ['original', 'rot90']);
});
