/**
 * Reply shapes described once (tests/vectors/shapes.json, also checked by tests/test_shapes.py against the
 * TypedDicts the daemon and the Python client share, src/vibest_pty/shapes.py, and a live daemon): the SDK's types have exactly those fields (a key list per type that the compiler
 * checks against the type, compared here with the file), and a live daemon's replies conform to them.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { type EmulatorStats, type HelloInfo, type RunResult, type TextResult, type WaitResult, type LastCommand, type PtyDaemonClient, type QueueStats, type SessionInfo, type Snapshot, type Stats } from "@vibest/pty-daemon";

import { Daemon, ROOT, daemonForFile, sleep } from "./helpers.js";

const FILE = join(ROOT, "tests", "vectors", "shapes.json");
const SHAPES = (JSON.parse(readFileSync(FILE, "utf8")) as { shapes: Record<string, Record<string, string>> }).shapes;
const HINT = "update tests/vectors/shapes.json, src/vibest_pty/shapes.py and sdk/typescript/src/types.ts together";

/** Every key of T, each exactly once: a missing or extra key is a compile error (satisfies checks both). */
type Exact<T> = { [K in keyof T]-?: true };

const TYPE_KEYS: Record<string, Record<string, true>> = {
  HelloInfo: {
    protocol: true, version: true, pid: true, features: true, instance: true, started_at: true,
  } satisfies Exact<HelloInfo>,
  SessionInfo: {
    id: true, pid: true, command: true, name: true, tags: true, cwd: true, title: true, cols: true, rows: true,
    created_at: true, last_attached_at: true, running: true, exit_code: true, exit_signal: true, clients: true,
    process: true, shell_state: true, shell_integration: true, last_command: true,
  } satisfies Exact<SessionInfo>,
  LastCommand: {
    command: true, exit_code: true, started_at: true, finished_at: true, cwd: true,
  } satisfies Exact<LastCommand>,
  Snapshot: {
    data: true, offset: true, cols: true, rows: true, cursor: true, cursor_visible: true, alt_screen: true,
    modes: true, title: true, cwd: true, scrollback_lines: true, degraded: true,
  } satisfies Exact<Snapshot>,
  QueueStats: {
    session: true, connection: true, events: true, bytes: true, level: true, discarded: true, resyncs: true,
    warnings: true,
  } satisfies Exact<QueueStats>,
  EmulatorStats: { pid: true, rss: true, sessions: true, restarts: true } satisfies Exact<EmulatorStats>,
  RunResult: {
    exit_code: true, output: true, output_offsets: true, duration_ms: true, truncated: true, command: true,
  } satisfies Exact<RunResult>,
  WaitResult: { offset: true, shell_state: true, code: true, signal: true, match: true } satisfies Exact<WaitResult>,
  TextResult: { text: true, offset: true, truncated: true } satisfies Exact<TextResult>,
  Stats: {
    version: true, instance: true, upgrades: true, last_upgrade_pause_ms: true, uptime: true, connections: true, sessions: true, running: true, bytes_in: true, bytes_out: true,
    frames_out: true, rss: true, emulators: true, emulators_rss: true, queues: true,
  } satisfies Exact<Stats>,
};

const keysOf = (shape: Record<string, string>) => Object.keys(shape).map((k) => k.replace(/\?$/, "")).sort();

/** Problems of `value` against a shapes.json type (see the file's comment for the grammar). */
function check(value: unknown, type: string, where: string): string[] {
  const alts = type.split("|");
  if (alts.length > 1) return alts.some((t) => check(value, t, where).length === 0) ? [] : [`${where}: ${String(value)} is not ${type}`];
  const shape = SHAPES[type];
  if (shape) {
    if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) return [`${where}: not a map (${type})`];
    const v = value as Record<string, unknown>;
    const known = new Set(keysOf(shape));
    const out = Object.keys(v).filter((k) => !known.has(k)).map((k) => `${where}.${k}: sent by the daemon but not in ${type} (${HINT})`);
    for (const [k, kt] of Object.entries(shape)) {
      const name = k.replace(/\?$/, "");
      if (!(name in v)) {
        if (!k.endsWith("?")) out.push(`${where}.${name}: in ${type} but not sent by the daemon`);
        continue;
      }
      out.push(...check(v[name], kt, `${where}.${name}`));
    }
    return out;
  }
  if (type.startsWith("[")) {
    if (!Array.isArray(value)) return [`${where}: not a list (${type})`];
    return value.flatMap((x, i) => check(x, type.slice(1, -1), `${where}[${i}]`));
  }
  if (type.startsWith("{")) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return [`${where}: not a map (${type})`];
    return Object.entries(value).flatMap(([k, x]) => check(x, type.slice(1, -1), `${where}[${k}]`));
  }
  const ok: Record<string, (x: unknown) => boolean> = {
    int: (x) => Number.isInteger(x) || typeof x === "bigint",
    number: (x) => typeof x === "number",
    str: (x) => typeof x === "string",
    bool: (x) => typeof x === "boolean",
    bin: (x) => x instanceof Uint8Array,
    null: (x) => x === null || x === undefined,
  };
  const f = ok[type];
  if (!f) return [`${where}: unknown type ${type} in shapes.json`];
  return f(value) ? [] : [`${where}: ${String(value)} is not ${type}`];
}

test("the SDK's types have exactly the fields of each shape in tests/vectors/shapes.json", () => {
  assert.deepEqual(Object.keys(TYPE_KEYS).sort(), Object.keys(SHAPES).sort(), `the shapes and the SDK's checked types differ (${HINT})`);
  for (const [name, shape] of Object.entries(SHAPES)) {
    assert.deepEqual(Object.keys(TYPE_KEYS[name]!).sort(), keysOf(shape), `${name} (${HINT})`);
  }
});

let daemon: Daemon;
let client: PtyDaemonClient;

daemonForFile((d, c) => {
  daemon = d;
  client = c;
}, {}, { reconnect: false });

test("a live daemon's replies have exactly the shapes of tests/vectors/shapes.json", async () => {
  const strip = ({ type: _t, id: _i, ...rest }: Record<string, unknown>) => rest;
  const hello = strip(await client.request("hello", { protocol: 1 }));
  const s = await client.createSession({ shell: "/bin/sh", attach: true });
  let text = "";
  const sub = s.onData((d) => (text += d));
  s.write("echo shaped\n");
  for (let i = 0; i < 500 && !text.includes("shaped"); i++) await sleep(20);
  sub.dispose();
  const stats = strip(await client.request("stats"));
  const snapshot = (await client.request("snapshot", { session: s.id })).snapshot;
  const listed = (await client.request("list")).sessions;
  const problems = [
    ...check(hello, "HelloInfo", "hello"),
    ...check((await client.request("attach", { session: s.id, snapshot: false })).session, "SessionInfo", "attach.session"),
    ...check(listed, "[SessionInfo]", "list.sessions"),
    ...check(snapshot, "Snapshot", "snapshot.snapshot"),
    ...check(stats, "Stats", "stats"),
  ];
  assert.ok((stats.queues as unknown[]).length > 0, "a subscribed session gives a QueueStats entry");
  assert.deepEqual(problems, []);
  await s.kill();
});

test("run, wait and text replies of a live daemon have exactly the shapes of tests/vectors/shapes.json", async () => {
  const home = mkdtempSync("/tmp/vpts-home-");
  try {
    const s = await client.createSession({ shell: "bash", cwd: home, env: { HOME: home, HISTFILE: "" } });
    const replies: [string, string, unknown][] = [];
    replies.push(["wait prompt", "WaitResult", await client.waitFor(s.id, { for: "prompt", timeoutMs: 20000 })]);
    replies.push(["run", "RunResult", await client.runCommand(s.id, "echo shaped", { timeoutMs: 20000 })]);
    replies.push(["wait text", "WaitResult", await client.waitFor(s.id, { for: "text", pattern: "shap.d", timeoutMs: 20000 })]);
    replies.push(["wait idle", "WaitResult", await client.waitFor(s.id, { for: "idle", idleMs: 50, timeoutMs: 20000 })]);
    replies.push(["text", "TextResult", await client.getText(s.id, "all")]);
    await client.input(s.id, "exit 3\r");
    const exited = await client.waitFor(s.id, { for: "exit", timeoutMs: 20000 });
    replies.push(["wait exit", "WaitResult", exited]);
    replies.push(["text since", "TextResult", await client.getText(s.id, { since: 0 })]);
    assert.deepEqual(replies.flatMap(([what, shape, value]) => check(value, shape, what)), []);
    assert.equal(exited.code, 3);
    await client.kill(s.id);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
