/**
 * Fidelity through a real renderer: attach from the SDK, write the snapshot and then the live output (strings from
 * the SDK's streaming TextDecoder: xterm.js 6 drops characters split across byte chunks, xtermjs/xterm.js#6003) into
 * @xterm/headless, and compare its screen text and cursor with the daemon's getSnapshot of the same moment rendered
 * into a second xterm.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, test, type TestContext } from "node:test";

import { type CreateSessionOptions, type PtyDaemonClient, type Snapshot } from "@vibest/pty-daemon";

import { daemonForFile, sleep } from "./helpers.js";

const require = createRequire(import.meta.url);
const { Terminal } = require("@xterm/headless") as typeof import("@xterm/headless");
type Term = InstanceType<typeof Terminal>;

let client: PtyDaemonClient;
let dir: string;

daemonForFile((_daemon, c) => {
  client = c;
});

before(() => {
  dir = mkdtempSync("/tmp/vpts-");
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function newTerm(cols: number, rows: number): Term {
  return new Terminal({ cols, rows, scrollback: 10000, allowProposedApi: true });
}

function write(term: Term, data: string): Promise<void> {
  return new Promise((resolve) => term.write(data, resolve));
}

function screen(term: Term): { lines: string[]; cursor: [number, number]; alt: boolean } {
  const b = term.buffer.active;
  const lines: string[] = [];
  for (let y = 0; y < term.rows; y++) lines.push(b.getLine(b.viewportY + y)?.translateToString(true) ?? "");
  return { lines, cursor: [b.cursorX, b.cursorY], alt: b.type === "alternate" };
}

async function renderSnapshot(snap: Snapshot): Promise<Term> {
  const t = newTerm(snap.cols, snap.rows);
  await write(t, new TextDecoder().decode(snap.data));
  return t;
}

/** Poll until the daemon's output offset is stable and equals what the live terminal got. */
async function settle(id: number, fed?: () => number): Promise<Snapshot> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await sleep(150);
    const snap = await client.getSnapshot(id);
    if (snap.offset === last && snap.offset > 0 && (!fed || snap.offset === fed())) return snap;
    last = snap.offset;
  }
  throw new Error("the session did not settle");
}

async function fidelity(
  t: TestContext,
  options: CreateSessionOptions,
  keys: Array<string | number>,
): Promise<void> {
  const info = await client.createSession({ cols: 80, rows: 24, ...options });
  try {
    await settle(info.id); // let the program draw before we attach
    let fed = 0;
    let chain = Promise.resolve();
    let live: Term | null = null;
    const pendingBeforeTerm: string[] = [];
    const onOutput = (ev: { session: number; data: string; bytes: Uint8Array; offset: number }) => {
      if (ev.session !== info.id) return;
      fed = ev.offset + ev.bytes.length;
      if (live) {
        const term = live;
        chain = chain.then(() => write(term, ev.data));
      } else pendingBeforeTerm.push(ev.data);
    };
    client.on("output", onOutput);
    const res = await client.attachSession(info.id);
    fed = Math.max(fed, res.offset);
    const snap0 = res.snapshot!;
    if (snap0.data.length === 0) {
      client.off("output", onOutput);
      t.skip("the daemon's emulator returned an empty snapshot (stub emulator): nothing to compare");
      return;
    }
    live = newTerm(snap0.cols, snap0.rows);
    const term = live;
    chain = chain.then(() => write(term, new TextDecoder().decode(snap0.data)));
    for (const d of pendingBeforeTerm.splice(0)) chain = chain.then(() => write(term, d));

    for (const k of keys) {
      if (typeof k === "number") await sleep(k);
      else client.sendInput(info.id, k);
    }
    const snap = await settle(info.id, () => fed);
    await chain;
    client.off("output", onOutput);

    const reference = await renderSnapshot(snap);
    const got = screen(term);
    if (process.env.VIBEST_PTY_DEBUG) console.error(got.lines.join("\n"), got.cursor, got.alt);
    const want = screen(reference);
    assert.deepEqual(got.lines, want.lines, "screen text: live xterm vs the daemon's snapshot");
    assert.deepEqual(got.cursor, want.cursor, "cursor: live xterm vs the snapshot rendered");
    assert.deepEqual(got.cursor, snap.cursor, "cursor: live xterm vs snapshot.cursor");
    assert.equal(got.alt, snap.alt_screen, "alternate screen");
    assert.equal(want.alt, snap.alt_screen, "alternate screen of the rendered snapshot");
    assert.ok(got.lines.join("").trim().length > 0, "the screen is not empty");
  } finally {
    await client.kill(info.id).catch(() => undefined);
  }
}

function which(cmd: string): string | null {
  try {
    return execFileSync("/bin/sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

test("vim: live xterm equals the daemon's snapshot", async (t) => {
  const vim = which("vim");
  if (!vim) {
    t.skip("vim is not installed");
    return;
  }
  const file = join(dir, "notes.txt");
  writeFileSync(file, Array.from({ length: 60 }, (_, i) => `line ${i + 1} ${"αβγ 世界 ".repeat(i % 4)}`).join("\n"));
  await fidelity(
    t,
    { shell: vim, args: ["-u", "NONE", "-i", "NONE", "-N", "-n", file], cwd: dir },
    [
      ":set number\r",
      100,
      "ggOtop 世界 🎉 line\x1b",
      100,
      "10Gyyp",
      ":syntax on\r",
      "30G",
      "A appended é\x1b",
      100,
      ":split\r",
      100,
      "\x17j",
      "G",
      100,
    ],
  );
});

test("curses-like script: alternate screen, colours, cursor moves, scroll region, wide chars", async (t) => {
  const script = [
    "printf '\\033[?1049h\\033[2J\\033[H'",
    "printf '\\033[1;31mred bold\\033[0m \\033[42mgreen bg\\033[0m\\r\\n'",
    "printf '\\033[5;10H世界 wide 🎉 emoji'",
    "printf '\\033[3;20r\\033[20;1H'",
    "i=1; while [ $i -le 30 ]; do printf 'scroll %d\\r\\n' $i; i=$((i+1)); done",
    "printf '\\033[r\\033[22;5H\\033[7mstatus line\\033[0m\\033[10;40H'",
    "exec cat",
  ].join("; ");
  await fidelity(t, { shell: "/bin/sh", args: ["-c", `stty -echo; ${script}`] }, [200, "typed\r\n", 100]);
});
