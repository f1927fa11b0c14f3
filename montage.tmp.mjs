// usage: node montage.mjs out.jpg root path1 path2 [path3...]
const sharp = (await import('sharp')).default;
const [out, root, ...paths] = process.argv.slice(2);
const tiles = await Promise.all(paths.map(p => sharp(`${root}/${p}`).resize(256, 192, { fit: 'fill' }).toBuffer()));
const cols = Math.min(4, tiles.length), rows = Math.ceil(tiles.length / cols);
await sharp({ create: { width: 256 * cols, height: 192 * rows, channels: 3, background: '#fff' } })
  .composite(tiles.map((t, i) => ({ input: t, left: (i % cols) * 256, top: Math.floor(i / cols) * 192 })))
  .png().toFile(out);
