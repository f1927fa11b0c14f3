import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { decodeImage } from '../data/images.js';
import { type ManifestEntry, loadManifestImage, readManifest } from '../data/manifest.js';
import { faultServer } from './helpers/http-server.js';
import { encode, pixels } from './helpers/images.js';
import { tempDir } from './helpers/shared.js';

const SIZE = { height: 32, width: 32 };

test('a CSV manifest gives entries with local paths resolved beside it and URLs kept', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'list.csv');
  writeFileSync(file, 'url_or_path,label,split\nimgs/a.jpg,cat,train\n"http://example.org/b,1.jpg",dog,\n/abs/c.png,dog,test\n');
  t.deepEqual(await readManifest(file), [
    { source: 'imgs/a.jpg', location: join(dir, 'imgs/a.jpg'), label: 'cat', split: 'train', line: 2 },
    { source: 'http://example.org/b,1.jpg', location: 'http://example.org/b,1.jpg', label: 'dog', split: null, line: 3 },
    { source: '/abs/c.png', location: '/abs/c.png', label: 'dog', split: 'test', line: 4 },
  ]);
  const jsonl = join(dir, 'list.jsonl');
  writeFileSync(jsonl, '{"url_or_path": "a.jpg", "label": "cat"}\n\n{"url_or_path": "https://x/y.jpg", "label": "dog", "split": "val"}\n');
  t.deepEqual(
    (await readManifest(jsonl)).map((e) => [e.location, e.label, e.split, e.line]),
    [
      [join(dir, 'a.jpg'), 'cat', null, 1],
      ['https://x/y.jpg', 'dog', 'val', 3],
    ],
  );
});

test('a bad manifest is one line naming file, line and field', async (t) => {
  const dir = tempDir(t);
  const cases: [string, string, string][] = [
    ['a.csv', 'path,label\nx.jpg,cat\n', 'a.csv:1: unknown column "path" (allowed: url_or_path, label, split)'],
    ['b.csv', 'url_or_path\nx.jpg\n', 'b.csv:1: missing column "label" (header: url_or_path,label,split)'],
    ['c.csv', 'url_or_path,label,split\nx.jpg,cat,training\n', 'c.csv:2: split: expected train, val, test or nothing, got "training"'],
    ['d.csv', 'url_or_path,label\nx.jpg,\n', 'd.csv:2: label: expected a class name'],
    ['e.jsonl', '{"url_or_path": "x.jpg", "label": "cat"}\n{"url_or_path": "y.jpg", "label": 3}\n', 'e.jsonl:2: label: expected a class name'],
    ['f.jsonl', '{"url_or_path": "x.jpg", "label": "cat"\n', 'f.jsonl:1: not valid JSON: '],
    ['g.jsonl', '{"url": "x.jpg", "label": "cat"}\n', 'g.jsonl:1: unknown field "url" (allowed: url_or_path, label, split)'],
    ['h.csv', 'url_or_path,label\nftp://host/x.jpg,cat\n', 'h.csv:2: url_or_path: only http(s) URLs can be fetched: ftp://host/x.jpg'],
    ['i.csv', 'url_or_path,label\n', 'i.csv lists no images'],
    ['j.txt', 'x', 'j.txt (--data): expected a .csv or .jsonl file'],
  ];
  for (const [name, text, message] of cases) {
    writeFileSync(join(dir, name), text);
    const error = await t.throwsAsync(readManifest(join(dir, name)));
    const expected = `${message.startsWith('i.csv') || message.startsWith('j.txt') ? 'manifest ' : ''}${dir}/${message}`;
    t.true(error!.message.startsWith(expected), `${name}: ${error!.message}`);
    t.false(error!.message.includes('\n'), name);
  }
});

test('each image fails on its own: slow, 404, cut, not an image, too large; the rest are read', async (t) => {
  const dir = tempDir(t);
  const jpeg = await encode(pixels(40, 30, 1), 40, 30);
  const png = await encode(pixels(40, 30, 2), 40, 30, 'png');
  mkdirSync(join(dir, 'local'));
  writeFileSync(join(dir, 'local', 'ok.png'), png);
  const server = await faultServer({
    '/ok.jpg': { body: jpeg, type: 'image/jpeg' },
    '/ok-chunked.png': { body: png, type: 'image/png', noLength: true },
    // 40 KiB at 1 KiB per 200 ms: 8 s, far beyond the timeout.
    '/slow.jpg': { body: Buffer.concat([jpeg, Buffer.alloc(40 * 1024)]), type: 'image/jpeg', trickleMs: 200 },
    '/cut.jpg': { body: jpeg, type: 'image/jpeg', cutAfter: 500 },
    '/page.jpg': { body: Buffer.from('<html>hotlinking forbidden</html>'), type: 'text/html; charset=utf-8' },
    '/garbage.jpg': { body: Buffer.from('this is not a JPEG at all'), type: 'image/jpeg' },
    '/huge.jpg': { body: Buffer.alloc(300_000, 1), type: 'image/jpeg' },
    '/huge-chunked.jpg': { body: Buffer.alloc(300_000, 1), type: 'image/jpeg', noLength: true },
  });
  t.teardown(() => server.close());
  const lines = [
    'url_or_path,label',
    ...['/ok.jpg', '/ok-chunked.png', '/slow.jpg', '/missing.jpg', '/cut.jpg', '/page.jpg', '/garbage.jpg', '/huge.jpg', '/huge-chunked.jpg'].map((p) => `${server.url(p)},x`),
    'local/ok.png,y',
    'local/absent.png,y',
  ];
  writeFileSync(join(dir, 'm.csv'), lines.join('\n'));
  const entries = await readManifest(join(dir, 'm.csv'));
  const options = { timeoutMs: 2500, retries: 2, backoffMs: 10, maxBytes: 200_000 };
  const outcome = async (entry: ManifestEntry) => {
    try {
      await decodeImage(await loadManifestImage(entry.location, options), SIZE, 'fill');
      return 'ok';
    } catch (error) {
      return (error as Error).message.replace(dir, 'DIR');
    }
  };
  const results = await Promise.all(entries.map(outcome));
  const byPath = Object.fromEntries(entries.map((e, i) => [e.source.replace(/^http:\/\/127\.0\.0\.1:\d+/, ''), results[i]]));
  t.like(byPath, {
    '/ok.jpg': 'ok',
    '/ok-chunked.png': 'ok',
    '/slow.jpg': 'no complete answer within 2500 ms (3 attempts)',
    '/missing.jpg': 'HTTP 404 Not Found',
    '/page.jpg': 'not an image: the server sent text/html',
    '/huge.jpg': 'larger than the 200000-byte limit (300000 bytes)',
    '/huge-chunked.jpg': 'larger than the 200000-byte limit',
    'local/ok.png': 'ok',
  });
  t.regex(byPath['/cut.jpg'], /\(3 attempts\)$/);
  t.regex(byPath['/garbage.jpg'], /unsupported image format/);
  t.regex(byPath['local/absent.png'], /ENOENT/);
  // Transient failures are retried (3 attempts each), permanent ones asked once.
  t.is(server.hits.get('/cut.jpg'), 3);
  t.is(server.hits.get('/slow.jpg'), 3);
  t.is(server.hits.get('/missing.jpg'), 1);
  t.is(server.hits.get('/page.jpg'), 1);
  t.is(server.hits.get('/huge.jpg'), 1);
});

test('a server that fails twice and then answers gets its image, after backoff', async (t) => {
  const jpeg = await encode(pixels(40, 30, 3), 40, 30);
  const answers = [503, 429, 200];
  const times: number[] = [];
  const server = createServer((_req, res) => {
    times.push(Date.now());
    const status = answers.shift() ?? 200;
    res.writeHead(status, { 'Content-Type': status === 200 ? 'image/jpeg' : 'text/plain' });
    res.end(status === 200 ? jpeg : 'busy');
  });
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  t.teardown(() => new Promise<void>((closed) => server.close(() => closed())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/img.jpg`;
  const entry: ManifestEntry = { source: url, location: url, label: 'x', split: null, line: 2 };
  const bytes = await loadManifestImage(entry.location, { retries: 3, backoffMs: 100 });
  t.true(bytes.equals(jpeg));
  t.is(times.length, 3);
  t.true(times[1] - times[0] >= 90 && times[2] - times[1] >= 190, `waits ${times[1] - times[0]} then ${times[2] - times[1]} ms`);
  answers.push(503, 503, 503);
  await t.throwsAsync(loadManifestImage(entry.location, { retries: 2, backoffMs: 1 }), { message: 'HTTP 503 Service Unavailable (3 attempts)' });
});
