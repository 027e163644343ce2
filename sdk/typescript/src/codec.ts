/**
 * Wire protocol v1 framing (docs/protocol.md): each frame is a u32 big-endian length N followed by N bytes holding
 * one MessagePack map. Encoding uses @msgpack/msgpack, which matches the shared vectors byte for byte (bin for
 * Uint8Array, str for strings, smallest integer encodings including uint64/int64, float64 for non-integers, map keys
 * in insertion order).
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

export const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;

/** A decoded frame's map. */
export type Message = Record<string, unknown>;

/** The stream cannot be framed any more (length 0 or over the maximum): the connection must be closed. */
export class FrameError extends Error {
  readonly code = "bad_frame";
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/** A complete frame whose payload is not one MessagePack map; framing stays intact. */
export class Malformed {
  readonly code = "bad_message";
  constructor(readonly reason: string) {}
}

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/** The MessagePack payload of `message` (no length prefix). `undefined` fields are left out. */
export function pack(message: Message): Uint8Array {
  return encoder.encode(message);
}

/** One frame: u32 big-endian length, then the MessagePack map. */
export function encodeFrame(message: Message): Uint8Array {
  const body = encoder.encodeSharedRef(message);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

/** Decode one frame's payload into a map, or Malformed. */
export function unpackPayload(payload: Uint8Array): Message | Malformed {
  let value: unknown;
  try {
    value = decoder.decode(payload);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return new Malformed(`payload is not one valid MessagePack value: ${reason}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value) || ArrayBuffer.isView(value)) {
    return new Malformed("payload is not a map");
  }
  return value as Message;
}

export function isMalformed(v: Message | Malformed): v is Malformed {
  return v instanceof Malformed;
}

/**
 * Incremental frame decoder: push() any chunking of the byte stream and get back the complete frames' maps (or
 * Malformed). A zero or oversized length throws FrameError, after which the decoder stays broken, like the
 * connection. Chunks are kept (not copied) until a frame is complete, so a large frame costs one copy at most;
 * `bin` values in the results are views into the received bytes.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private head = 0; // bytes of chunks[0] already consumed
  private _buffered = 0;
  private error: FrameError | null = null;

  constructor(readonly maxFrame: number = DEFAULT_MAX_FRAME) {}

  /** Bytes received but not yet decoded (a partial frame). */
  get buffered(): number {
    return this._buffered;
  }

  push(chunk: Uint8Array): Array<Message | Malformed> {
    if (this.error) throw this.error;
    if (chunk.length > 0) {
      // A plain Uint8Array view (not a Buffer), so bin values decode as Uint8Array whatever the source.
      if (chunk.constructor !== Uint8Array) chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length);
      this.chunks.push(chunk);
      this._buffered += chunk.length;
    }
    const out: Array<Message | Malformed> = [];
    while (this._buffered >= 4) {
      const n = this.peekLength();
      if (n === 0 || n > this.maxFrame) {
        this.error = new FrameError(
          n === 0 ? "frame length 0" : `frame length ${n} exceeds the maximum ${this.maxFrame}`,
        );
        this.chunks = [];
        this._buffered = 0;
        throw this.error;
      }
      if (this._buffered < 4 + n) break;
      const frame = this.take(4 + n);
      out.push(unpackPayload(frame.subarray(4)));
    }
    return out;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length - this.head >= 4) {
      const o = first.byteOffset + this.head;
      return new DataView(first.buffer, o, 4).getUint32(0, false);
    }
    const b = this.copyOut(4, false);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, false);
  }

  /** The next n bytes as one contiguous array, consumed. */
  private take(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.head += n;
      this._buffered -= n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return view;
    }
    return this.copyOut(n, true);
  }

  private copyOut(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    let i = 0;
    let head = this.head;
    while (filled < n) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length - head, n - filled);
      out.set(c.subarray(head, head + k), filled);
      filled += k;
      head += k;
      if (head === c.length) {
        i++;
        head = 0;
      }
    }
    if (consume) {
      this.chunks.splice(0, i);
      this.head = head;
      this._buffered -= n;
    }
    return out;
  }
}
