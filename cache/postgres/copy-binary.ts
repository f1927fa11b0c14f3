/**
 * PostgreSQL's binary COPY format, for moving feature vectors in bulk without turning
 * 5 KiB of floats into 10 KiB of hex text: an 11-byte signature, flags and extension
 * length, then per row a field count (int16) and per field its length (int32, -1 = NULL)
 * and bytes; -1 as field count ends the data. A text field is its UTF-8 bytes, a bytea
 * field its raw bytes, so the vectors arrive as the same little-endian float32 bytes
 * that SQLite stores.
 */

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const HEADER_LENGTH = SIGNATURE.length + 8;

export type CopyField = Buffer | string | null;

/** Rows as one binary COPY payload (fields in the COPY statement's column order). */
export function encodeCopyRows(rows: Iterable<readonly CopyField[]>): Buffer {
  const parts: Buffer[] = [Buffer.concat([SIGNATURE, Buffer.alloc(8)])];
  for (const row of rows) {
    const head = Buffer.alloc(2);
    head.writeInt16BE(row.length);
    parts.push(head);
    for (const field of row) {
      const length = Buffer.alloc(4);
      if (field === null) {
        length.writeInt32BE(-1);
        parts.push(length);
        continue;
      }
      const bytes = typeof field === 'string' ? Buffer.from(field, 'utf8') : field;
      length.writeInt32BE(bytes.length);
      parts.push(length, bytes);
    }
  }
  const trailer = Buffer.alloc(2);
  trailer.writeInt16BE(-1);
  parts.push(trailer);
  return Buffer.concat(parts);
}

/**
 * Reads binary COPY output chunk by chunk (as pg-copy-streams delivers it) and hands each
 * complete row to `onRow`; fields are views into the received bytes (copy what you keep).
 * A row cut by a chunk boundary is completed from just the bytes it needs: joining every
 * new chunk to the leftover would copy the whole stream once more.
 */
export class CopyRowDecoder {
  private pending: Buffer = Buffer.alloc(0);
  private headerRead = false;
  private ended = false;

  constructor(private readonly onRow: (fields: (Buffer | null)[]) => void) {}

  push(chunk: Buffer): void {
    let buffer = chunk;
    if (!this.headerRead || this.ended) {
      buffer = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
      this.pending = Buffer.alloc(0);
      if (!this.headerRead) {
        if (buffer.length < HEADER_LENGTH) {
          this.pending = buffer;
          return;
        }
        if (!buffer.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('not PostgreSQL binary COPY data');
        buffer = buffer.subarray(HEADER_LENGTH + buffer.readInt32BE(SIGNATURE.length + 4));
        this.headerRead = true;
      }
    } else if (this.pending.length) {
      // Join the leftover with a growing head of the chunk until the row is whole.
      for (let take = 8192; ; take *= 2) {
        const joined = Buffer.concat([this.pending, chunk.subarray(0, take)]);
        const end = this.readRow(joined, 0);
        if (end !== undefined) {
          buffer = chunk.subarray(end - this.pending.length);
          this.pending = Buffer.alloc(0);
          break;
        }
        if (take >= chunk.length) {
          this.pending = joined;
          return;
        }
      }
    }
    let offset = 0;
    for (let end; !this.ended && (end = this.readRow(buffer, offset)) !== undefined; ) offset = end;
    // Keep only the unfinished row (copied, so the big chunk it came in can be freed).
    if (!this.ended && offset < buffer.length) this.pending = Buffer.from(buffer.subarray(offset));
  }

  /** Hands over the row (or trailer) at `offset` and returns where it ends, or undefined if it is not all there. */
  private readRow(buffer: Buffer, offset: number): number | undefined {
    if (buffer.length - offset < 2) return undefined;
    const count = buffer.readInt16BE(offset);
    if (count === -1) {
      this.ended = true;
      return offset + 2;
    }
    const fields: (Buffer | null)[] = [];
    let at = offset + 2;
    for (let i = 0; i < count; i++) {
      if (buffer.length - at < 4) return undefined;
      const length = buffer.readInt32BE(at);
      at += 4;
      if (length === -1) {
        fields.push(null);
        continue;
      }
      if (buffer.length - at < length) return undefined;
      fields.push(buffer.subarray(at, at + length));
      at += length;
    }
    this.onRow(fields);
    return at;
  }

  /** Throws unless the data ended with the trailer (a cut stream must not look complete). */
  finish(): void {
    if (!this.ended) throw new Error('binary COPY data ended early');
  }
}
