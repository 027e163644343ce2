/** The README example as written, and UTF-8 streaming across chunks. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { createClient, type OutputEvent, type PtyDaemonClient } from "@vibest/pty-daemon";

import { Daemon, OutputCollector, nextEvent } from "./helpers.js";

const savedHome = process.env.HOME;
let daemon: Daemon;

before(async () => {
  // $HOME points at a temp dir so `${process.env.HOME}/.vibest/pty/socket` is this test's daemon.
  const home = mkdtempSync("/tmp/vpts-");
  process.env.HOME = home;
  daemon = new Daemon({ HOME: home }, home);
  Object.defineProperty(daemon, "socket", { value: join(home, ".vibest", "pty", "socket") });
  await daemon.start();
});

after(async () => {
  process.env.HOME = savedHome;
  await daemon?.cleanup();
});

test("the README example works as written", async () => {
  const zsh = existsSync("/bin/zsh") ? "/bin/zsh" : "/bin/sh"; // the example uses zsh; /bin/sh when missing

  // --- as in the README ---
  const client = createClient({ socketPath: `${process.env.HOME}/.vibest/pty/socket` });
  await client.waitForConnection();
  const session = await client.createSession({ shell: zsh, cols: 80, rows: 24 });
  await client.attachSession(session.id);
  client.on("output", (event) => console.log(event.data));
  client.sendInput(session.id, "ls -la\n");
  let paused = false;
  client.on("backpressure_warning", (event) => {
    if (event.level === "red") {
      paused = true; /* pause rendering */
    }
  });
  // --- end ---

  try {
    const out = new OutputCollector(client, session.id);
    // ls -la in the daemon's $HOME (our temp home) lists the .vibest directory
    await out.waitForText(".vibest");
    assert.deepEqual(out.errors, []);
    assert.equal(paused, false);
    assert.equal(typeof session.id, "number");
  } finally {
    await client.kill(session.id);
    await client.close();
  }
});

async function connect(): Promise<PtyDaemonClient> {
  const c = createClient({ socketPath: daemon.socket });
  await c.waitForConnection();
  return c;
}

test("UTF-8: CJK and emoji written one byte at a time arrive intact in data", async () => {
  const c = await connect();
  try {
    const text = "世界 héllo 🎉 日本語 👩‍💻";
    const bytes = Buffer.from(text, "utf8");
    // printf one octal escape at a time with sleeps: each byte is its own PTY read, so its own output chunk
    const script = [...bytes].map((b) => `printf '\\${b.toString(8).padStart(3, "0")}'; sleep 0.02`).join("; ");
    const events: OutputEvent[] = [];
    c.on("output", (ev) => events.push({ ...ev, bytes: Uint8Array.from(ev.bytes) }));
    const out = new OutputCollector(c);
    const exit = nextEvent(c, "exit", () => true, 20000);
    const info = await c.createSession({ shell: "/bin/sh", args: ["-c", `${script}; printf END`], attach: true });
    out.bind(info.id);
    await exit;
    assert.equal(out.text, `${text}END`);
    assert.ok(!out.text.includes("\uFFFD"));
    assert.deepEqual(out.bytes(), Buffer.concat([bytes, Buffer.from("END")]));
    const mine = events.filter((e) => e.session === info.id);
    assert.ok(mine.length > 10, `the bytes should arrive in many chunks, got ${mine.length}`);
    // some chunk ended inside a character: its data was held back, not mangled
    assert.ok(mine.some((e) => e.bytes.length > 0 && e.data === ""), "no chunk split a character");
  } finally {
    await c.close();
  }
});

test("UTF-8: a fresh attach resets the session's decoder", async () => {
  const c = await connect();
  try {
    // -icanon: cat gets (and echoes) each byte at once
    const info = await c.createSession({ shell: "/bin/sh", args: ["-c", "stty -icanon -echo; echo ready; exec cat"] });
    await c.attachSession(info.id);
    const out = new OutputCollector(c, info.id);
    if (!(await c.getSnapshot(info.id)).offset) await out.waitForText("ready");
    await new Promise((r) => setTimeout(r, 100));
    await c.input(info.id, new Uint8Array([0xe4, 0xb8])); // half of 世, held in the decoder
    await out.waitFor(() => out.chunks.some((b) => b.includes(0xb8)));
    const res = await c.attachSession(info.id); // restart: the half character is gone
    const after = new OutputCollector(c, info.id);
    await c.input(info.id, "ok\n");
    await after.waitForText("ok\r\n");
    assert.equal(after.text, "ok\r\n");
    assert.equal(after.startOffset, res.offset);
    void out;
    await c.kill(info.id);
  } finally {
    await c.close();
  }
});
