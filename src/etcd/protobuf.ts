/**
 * Protocol buffers' wire format, as far as etcd-sync's messages need it: a writer into one
 * buffer sized in advance, and a reader that hands out views into the reply instead of copies.
 * The messages themselves are in codec.ts.
 */

export const VARINT = 0;
export const FIXED64 = 1;
export const BYTES = 2;
export const FIXED32 = 5;

export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

export function bigVarintSize(n: bigint): number {
  // int64 on the wire: a negative number takes ten bytes (two's complement).
  let v = BigInt.asUintN(64, n);
  let size = 1;
  while (v >= 128n) {
    v >>= 7n;
    size++;
  }
  return size;
}

/** Size of a length-delimited field of `length` bytes with a one-byte tag. */
export const fieldSize = (length: number): number => 1 + varintSize(length) + length;

export class Writer {
  readonly buf: Buffer;
  private pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  tag(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  varint(n: number): this {
    while (n >= 128) {
      this.buf[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
    return this;
  }

  bigVarint(n: bigint): this {
    let v = BigInt.asUintN(64, n);
    while (v >= 128n) {
      this.buf[this.pos++] = Number(v & 127n) | 128;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
    return this;
  }

  bytes(field: number, value: Buffer): this {
    this.tag(field, BYTES).varint(value.length);
    value.copy(this.buf, this.pos);
    this.pos += value.length;
    return this;
  }

  /** Header of an embedded message of `length` bytes (written next). */
  message(field: number, length: number): this {
    return this.tag(field, BYTES).varint(length);
  }

  done(): Buffer {
    if (this.pos !== this.buf.length) throw new Error(`protobuf encoder: wrote ${this.pos} of ${this.buf.length} bytes`);
    return this.buf;
  }
}

export class Reader {
  pos: number;

  constructor(
    readonly buf: Buffer,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get more(): boolean {
    return this.pos < this.end;
  }

  /** A varint as a number (exact below 2^53: lengths, tags, booleans, enums). */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.end) throw new Error('protobuf decoder: truncated varint');
      const b = this.buf[this.pos++] as number;
      result += (b & 127) * scale;
      if (b < 128) return result;
      scale *= 128;
    }
  }

  /** An int64 varint, exact over the whole range. */
  int64(): bigint {
    const start = this.pos;
    const n = this.varint();
    // Up to seven bytes (49 bits) the number is exact; longer ones are re-read as a bigint.
    if (this.pos - start <= 7) return BigInt(n);
    let v = 0n;
    let shift = 0n;
    for (let i = start; i < this.pos; i++) {
      v |= BigInt((this.buf[i] as number) & 127) << shift;
      shift += 7n;
    }
    return BigInt.asIntN(64, v);
  }

  uint64(): bigint {
    return BigInt.asUintN(64, this.int64());
  }

  /** A length-delimited field: a view into the buffer, not a copy. */
  bytes(): Buffer {
    const length = this.varint();
    const start = this.pos;
    this.pos += length;
    if (this.pos > this.end) throw new Error('protobuf decoder: truncated field');
    return this.buf.subarray(start, this.pos);
  }

  /** Bounds of an embedded message; the reader moves past it. */
  embedded(): Reader {
    const length = this.varint();
    const inner = new Reader(this.buf, this.pos, this.pos + length);
    this.pos += length;
    if (this.pos > this.end) throw new Error('protobuf decoder: truncated message');
    return inner;
  }

  skip(wireType: number): void {
    if (wireType === VARINT) this.varint();
    else if (wireType === FIXED64) this.pos += 8;
    else if (wireType === BYTES) {
      // Not `this.pos += this.varint()`: that adds the length to the position before the varint.
      const length = this.varint();
      this.pos += length;
    }
    else if (wireType === FIXED32) this.pos += 4;
    else throw new Error(`protobuf decoder: unsupported wire type ${wireType}`);
    if (this.pos > this.end) throw new Error('protobuf decoder: truncated field');
  }
}

