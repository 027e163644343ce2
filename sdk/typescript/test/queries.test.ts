/**
 * Terminal queries with xterm.js views attached: each @xterm/headless terminal answers what it sees via onData, as
 * a real view would, yet each query of tests/query_probe.py (run in the session) gets exactly one answer, the
 * session's (the daemon keeps queries from clients); and colorsFromTheme sets what colour queries answer.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { colorsFromTheme, createClient, type PtyDaemonClient } from "@vibest/pty-daemon";

import { Daemon, PYTHON, ROOT, sleep } from "./helpers.js";

const require = createRequire(import.meta.url);
const { Terminal } = require("@xterm/headless") as typeof import("@xterm/headless");

let daemon: Daemon;
let dir: string;

before(async () => {
  daemon = await Daemon.start();
  dir = mkdtempSync("/tmp/vpq-");
});

after(async () => {
  await daemon?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const hex = (s: string): string => Buffer.from(s, "latin1").toString("hex");

async function view(id: number): Promise<PtyDaemonClient> {
  const c = createClient({ socketPath: daemon.socket });
  await c.waitForConnection();
  const term = new Terminal({ cols: 80, rows: 24, allowProposedApi: true });
  term.onData((d) => c.sendInput(id, d)); // xterm.js answers DA, CPR, DECRQM, ... through onData
  c.on("output", (ev) => {
    if (ev.session === id) term.write(ev.data);
  });
  const res = await c.attachSession(id);
  term.write(res.snapshot!.data);
  return c;
}

async function probe(c: PtyDaemonClient, id: number, name: string): Promise<Record<string, unknown>> {
  const out = join(dir, name);
  await c.input(id, `exec ${PYTHON} ${join(ROOT, "tests", "query_probe.py")} ${out}\n`);
  for (let i = 0; i < 300 && !existsSync(out); i++) await sleep(50);
  return JSON.parse(readFileSync(out, "utf8")) as Record<string, unknown>;
}

test("two xterm.js views attached: every query answered once, by the session", async () => {
  const owner = createClient({ socketPath: daemon.socket });
  await owner.waitForConnection();
  const info = await owner.createSession({ shell: "/bin/sh", cols: 80, rows: 24 });
  const views = [await view(info.id), await view(info.id)];
  try {
    const r = await probe(owner, info.id, "two.json");
    const replies = r.replies as Record<string, string>;
    assert.equal(replies.da1, hex("\x1b[?62;22c"));
    assert.equal(replies.da2, hex("\x1b[>1;10;0c"));
    assert.equal(replies.cpr, hex("\x1b[3;5R"));
    assert.equal(replies.decrqm, hex("\x1b[?2004;2$y"));
    assert.equal(replies.osc11, hex("\x1b]11;rgb:0000/0000/0000\x07"));
    assert.equal(replies.size18, hex("\x1b[8;24;80t"));
    for (const [k, v] of Object.entries(replies)) assert.ok(v.length > 0 && !v.includes("|"), `${k}: ${v}`);
    assert.equal(r.late, "", "a second answer arrived");
  } finally {
    for (const v of views) await v.close();
    await owner.close();
  }
});

test("colorsFromTheme: the session answers colour queries with the view's theme", async () => {
  const colors = colorsFromTheme({ foreground: "#102030", background: "rgb(250, 250, 250)", red: "#abc" });
  assert.deepEqual(colors, { foreground: "#102030", background: "#fafafa", palette: { 1: "#abc" } });
  const c = createClient({ socketPath: daemon.socket });
  await c.waitForConnection();
  try {
    const info = await c.createSession({ shell: "/bin/sh", colors });
    const r = await probe(c, info.id, "theme.json");
    const replies = r.replies as Record<string, string>;
    assert.equal(replies.osc10, hex("\x1b]10;rgb:1010/2020/3030\x1b\\"));
    assert.equal(replies.osc11, hex("\x1b]11;rgb:fafa/fafa/fafa\x07"));
    assert.equal(replies.osc4, hex("\x1b]4;1;rgb:aaaa/bbbb/cccc\x1b\\"));
    assert.equal(replies.color_scheme, hex("\x1b[?997;2n"));
    await c.attachSession(info.id, { read_only: true });
    await assert.rejects(c.input(info.id, "x"), /read.only/);
  } finally {
    await c.close();
  }
});
