/** Zip archives for download tests, written with yazl (the writing twin of yauzl, which reads them). */
import yazl from 'yazl';

export function zipOf(files: ReadonlyArray<{ name: string; data: Buffer }>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const { name, data } of files) zip.addBuffer(data, name, { mtime: new Date(0) });
  zip.end();
  const chunks: Buffer[] = [];
  return new Promise((done, fail) => {
    zip.outputStream.on('data', (chunk: Buffer) => chunks.push(chunk));
    zip.outputStream.on('error', fail);
    zip.outputStream.on('end', () => done(Buffer.concat(chunks)));
  });
}
