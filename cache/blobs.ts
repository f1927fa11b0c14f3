/** float32 arrays <-> SQLite BLOBs (little-endian, as every platform Node runs on). */

export const floatBytes = (values: Float32Array): Buffer =>
  Buffer.from(values.buffer, values.byteOffset, values.byteLength);

/** Copies out of the driver's buffer, which need not be 4-byte aligned. */
export const bytesToFloats = (bytes: Uint8Array): Float32Array => new Float32Array(new Uint8Array(bytes).buffer);
