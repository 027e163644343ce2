/** The shared protocol vectors (tests/vectors/frames.json), framing under any chunking, and protocol errors. */
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { describe, test } from "node:test";

import {
  createClient,
  encodeFrame,
  FrameDecoder,
  FrameError,
  Malformed,
  PtyDaemonError,
  type Message,
} from "@vibest/pty-daemon";

import { Daemon, ROOT, nextEvent } from "./helpers.js";

interface Vector {
  name: string;
  hex: string;
  value: unknown;
}
interface Invalid {
  name: string;
  hex: string;
  error: string;
}
const vectors = JSON.parse(readFileSync(join(ROOT, "tests", "vectors", "frames.json"), "utf8")) as {
  frames: Vector[];
  invalid: Invalid[];
};

/** JSON value -> protocol value: {"$bin": hex} becomes a Uint8Array. */
function revive(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revive);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.$bin === "string") return Uint8Array.from(Buffer.from(o.$bin, "hex"));
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, revive(x)]));
  }
  return v;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (h: string) => Uint8Array.from(Buffer.from(h, "hex"));

function decodeAll(bytes: Uint8Array, chunk = bytes.length): Array<Message | Malformed> {
  const d = new FrameDecoder();
  const out: Array<Message | Malformed> = [];
  for (let i = 0; i < bytes.length; i += chunk) out.push(...d.push(bytes.subarray(i, i + chunk)));
  assert.equal(d.buffered, 0);
  return out;
}

describe("shared vectors", () => {
  test("vector file is present and non-trivial", () => {
    assert.ok(vectors.frames.length >= 20);
    assert.ok(vectors.invalid.length >= 5);
  });

  for (const v of vectors.frames) {
    test(`encode ${v.name} byte for byte`, () => {
      assert.equal(hex(encodeFrame(revive(v.value) as Message)), v.hex);
    });
    test(`decode ${v.name}`, () => {
      const msgs = decodeAll(unhex(v.hex));
      assert.equal(msgs.length, 1);
      assert.deepEqual(msgs[0], revive(v.value));
      // the decoded map keeps the vector's key order
      assert.deepEqual(Object.keys(msgs[0]!), Object.keys(v.value as object));
    });
  }

  test("all frames concatenated, decoded under every chunk size 1..64 and at every split point", () => {
    const all = Buffer.concat(vectors.frames.map((v) => unhex(v.hex)));
    const want = vectors.frames.map((v) => revive(v.value));
    for (let chunk = 1; chunk <= 64; chunk++) assert.deepEqual(decodeAll(all, chunk), want);
    for (let split = 1; split < all.length; split++) {
      const d = new FrameDecoder();
      const got = [...d.push(all.subarray(0, split)), ...d.push(all.subarray(split))];
      assert.deepEqual(got, want);
    }
  });

  for (const v of vectors.invalid) {
    test(`invalid ${v.name} is rejected as ${v.error}`, () => {
      const d = new FrameDecoder();
      if (v.error === "bad_frame") {
        assert.throws(() => d.push(unhex(v.hex)), (e: unknown) => e instanceof FrameError && e.code === "bad_frame");
        // the decoder stays broken, like the connection
        assert.throws(() => d.push(unhex("0000000180")), FrameError);
      } else {
        const msgs = d.push(unhex(v.hex));
        assert.equal(msgs.length, 1);
        assert.ok(msgs[0] instanceof Malformed, `${v.name} decoded as ${JSON.stringify(msgs[0])}`);
        assert.equal((msgs[0] as Malformed).code, v.error);
        // framing stays intact: the next frame decodes
        assert.deepEqual(d.push(encodeFrame({ type: "ok" })), [{ type: "ok" }]);
      }
    });
  }

  test("framing after a malformed frame stays intact", () => {
    const d = new FrameDecoder();
    const good = encodeFrame({ type: "ok", id: 1 });
    const got = d.push(Buffer.concat([unhex("0000000193"), good]));
    assert.equal(got.length, 2);
    assert.ok(got[0] instanceof Malformed);
    assert.deepEqual(got[1], { type: "ok", id: 1 });
  });

  test("Uint8Array and Buffer encode as bin, strings as str", () => {
    const a = encodeFrame({ data: new Uint8Array([1, 2]) });
    const b = encodeFrame({ data: Buffer.from([1, 2]) });
    assert.equal(hex(a), hex(b));
    assert.equal(hex(a).slice(8), "81a464617461c4020102");
    assert.equal(hex(encodeFrame({ data: "é" })).slice(8), "81a464617461a2c3a9");
  });

  test("a frame over the configured maximum is a FrameError, not a crash", () => {
    const d = new FrameDecoder(1024);
    assert.throws(() => d.push(unhex("00000401")), /exceeds the maximum 1024/);
    const ok = new FrameDecoder(1024);
    assert.equal(ok.push(encodeFrame({ type: "output", data: new Uint8Array(1000) })).length, 1);
  });

  test("a large frame in many small chunks costs one copy", () => {
    const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => i & 0xff);
    const frame = encodeFrame({ type: "output", session: 1, data, offset: 5 });
    const d = new FrameDecoder();
    let got: Array<Message | Malformed> = [];
    for (let i = 0; i < frame.length; i += 4096) got = got.concat(d.push(frame.subarray(i, i + 4096)));
    assert.equal(got.length, 1);
    assert.deepEqual((got[0] as Message).data, data);
  });
});

describe("the daemon answers the invalid vectors", () => {
  test("each invalid frame gets its error code from a real daemon", async () => {
    const daemon = await Daemon.start();
    try {
      for (const v of vectors.invalid) {
        const reply = await new Promise<Message>((resolve, reject) => {
          const s = net.createConnection(daemon.socket);
          const d = new FrameDecoder();
          s.on("data", (chunk) => {
            for (const m of d.push(chunk)) {
              if (!(m instanceof Malformed)) {
                s.destroy();
                resolve(m);
              }
            }
          });
          s.on("error", reject);
          s.on("connect", () => s.write(unhex(v.hex)));
          setTimeout(() => reject(new Error(`no reply to ${v.name}`)), 5000);
        });
        assert.equal(reply.type, "error", v.name);
        assert.equal(reply.code, v.error, v.name);
      }
    } finally {
      await daemon.cleanup();
    }
  });
});

describe("protocol errors from the daemon side", () => {
  test("an oversized frame from the peer emits error (bad_frame) and close, no crash, no reconnect", async () => {
    const dir = mkdtempSync("/tmp/vpts-");
    const path = join(dir, "s");
    let connections = 0;
    const server = net.createServer((sock) => {
      connections++;
      const d = new FrameDecoder();
      sock.on("data", (chunk) => {
        for (const m of d.push(chunk)) {
          if (m instanceof Malformed) continue;
          if (m.type === "hello") {
            sock.write(encodeFrame({ type: "ok", id: m.id, protocol: 1, version: "fake", pid: 1, features: [] }));
          } else {
            sock.write(unhex("04000000a1")); // a frame claiming 64 MiB
          }
        }
      });
      sock.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(path, r));
    const c = createClient({ socketPath: path, maxFrame: 16 * 1024 * 1024 });
    try {
      const error = nextEvent(c, "error");
      const close = nextEvent(c, "close");
      await c.waitForConnection();
      const pending = c.listSessions();
      const e = await error;
      await assert.rejects(pending, (err: unknown) => err instanceof PtyDaemonError && err.code === "bad_frame");
      assert.ok(e instanceof PtyDaemonError);
      assert.equal(e.code, "bad_frame");
      const ev = await close;
      assert.match(ev.reason, /protocol error/);
      assert.equal(ev.error?.code, "bad_frame");
      assert.equal(c.closed, true);
      assert.equal(connections, 1);
    } finally {
      await c.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a malformed payload from the peer is an error event; the connection stays usable", async () => {
    const dir = mkdtempSync("/tmp/vpts-");
    const path = join(dir, "s");
    const server = net.createServer((sock) => {
      const d = new FrameDecoder();
      sock.on("data", (chunk) => {
        for (const m of d.push(chunk)) {
          if (m instanceof Malformed) continue;
          if (m.type === "hello") {
            sock.write(unhex("0000000193"));
            sock.write(encodeFrame({ type: "ok", id: m.id, protocol: 1, version: "fake", pid: 1, features: [] }));
          } else {
            sock.write(encodeFrame({ type: "ok", id: m.id, sessions: [] }));
          }
        }
      });
      sock.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(path, r));
    const c = createClient({ socketPath: path });
    try {
      const error = nextEvent(c, "error");
      await c.waitForConnection();
      assert.equal((await error).code, "bad_message");
      assert.deepEqual(await c.listSessions(), []);
    } finally {
      await c.close();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
