/**
 * `@vibest/pty-daemon/node-pty` runs programs written against node-pty's documented API with only the import
 * changed (test/fixtures/node-pty/*), each a separate Node process, against a real daemon. And the per-session
 * handles of the client (client.session(id), createSession's result).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { createClient, type PtyDaemonClient } from "@vibest/pty-daemon";

import { Daemon, ROOT, daemonForFile, sleep } from "./helpers.js";

const FIXTURES = join(ROOT, "sdk", "typescript", "test", "fixtures", "node-pty");
let daemon: Daemon;
let appCwd: string;
let client: PtyDaemonClient;

// A variable only the daemon has: a node-pty session must not see it (env = the app's process.env, whole).
daemonForFile((d, c) => {
  daemon = d;
  client = c;
}, { DAEMON_ONLY: "1" }, { reconnect: false });

before(() => {
  appCwd = realpathSync(mkdtempSync("/tmp/vpts-app-"));
});

after(() => {
  if (appCwd) rmSync(appCwd, { recursive: true, force: true });
});

/** Run a fixture program as the app would run: its own process, cwd and environment. Resolves with its JSON line. */
function runProgram(name: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const env: NodeJS.ProcessEnv = { ...process.env, RUST_PTY_SOCKET_PATH: daemon.socket, APP_ONLY: "yes", HOME: appCwd };
  delete env.DAEMON_ONLY;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(FIXTURES, name)], { cwd: appCwd, env, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${name}: ${err.message}\n${stdout}\n${stderr}\n${daemon.log().slice(-2000)}`));
      const last = stdout.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(last) as Record<string, unknown>);
      } catch {
        reject(new Error(`${name} printed no JSON line:\n${stdout}\n${stderr}`));
      }
    });
  });
}

test("node-pty defaults: cwd and env are the app's, TERM is `name`, size and exit code as given; the app then ends", async () => {
  const r = await runProgram("defaults.mjs");
  const out = r.out as string;
  assert.match(out, new RegExp(`pwd=${appCwd}\\r?\\n`));
  assert.match(out, /term=xterm-color\r?\n/);
  assert.match(out, /app=yes\r?\n/);
  assert.match(out, /daemon=unset\r?\n/);
  assert.match(out, /40 100\r?\n/);
  assert.equal(r.exitCode, 7);
  assert.equal(r.signal, undefined);
  assert.deepEqual([r.cols, r.rows], [100, 40]);
});

test("an interactive node-pty program: pid, process follows the foreground program, kill(signal), resize, pause/resume", async () => {
  const r = await runProgram("interactive.mjs");
  assert.ok(typeof r.pid === "number" && r.pid > 0, `pid ${String(r.pid)}`);
  assert.deepEqual(r.processes, ["sleep", "sh"]);
  assert.equal(r.quietWhilePaused, true);
  assert.equal(r.exitCode, 3);
  assert.deepEqual([r.cols, r.rows], [100, 40]);
});

test("kill() hangs a node-pty session up (exitCode 0, signal SIGHUP); encoding null gives Buffers", async () => {
  const r = await runProgram("hangup.mjs");
  assert.deepEqual(r, { exitCode: 0, signal: 1, buffers: true });
});

test("a node-pty session survives the app that spawned it (CommonJS require of the node-pty entry)", async () => {
  const r = await runProgram("survives.cjs");
  const alive = (await client.listSessions()).find((s) => s.pid === r.pid);
  assert.ok(alive, `no session with pid ${String(r.pid)} after the app ended`);
  assert.equal(alive.running, true);
  assert.equal(alive.process, "sleep");
  await client.kill(alive.id);
});

test("session handles: createSession's result and client.session(id) have their own events and methods", async () => {
  const s = await client.createSession({ shell: "/bin/sh", attach: true, name: "handle" });
  assert.equal(s.name, "handle"); // the create reply's SessionInfo fields
  let text = "";
  let otherSessions = 0;
  const other = await client.createSession({ shell: "/bin/sh", args: ["-c", "echo other; sleep 5"], attach: true });
  const sub = s.onData((data) => {
    text += data;
  });
  const spy = client.session(other.id).onData(() => otherSessions++);
  s.write("echo handle-$((40+2))\n");
  const deadline = Date.now() + 20_000;
  while (!text.includes("handle-42") && Date.now() < deadline) await sleep(20);
  assert.match(text, /handle-42/);
  assert.doesNotMatch(text, /other/);
  await s.resize(90, 30);
  assert.deepEqual([(await s.info()).cols, (await s.info()).rows], [90, 30]);
  const snap = await s.snapshot();
  assert.equal(snap.cols, 90);
  sub.dispose();
  sub.dispose(); // twice is harmless
  const exited = new Promise<{ code: number | null }>((resolve) => {
    const d = client.session(s.id).onExit((e) => {
      d.dispose();
      resolve(e);
    });
  });
  const before = text;
  s.write("exit 5\n");
  assert.equal((await exited).code, 5);
  assert.equal(text, before, "a disposed onData listener got data");
  spy.dispose();
  await client.kill(other.id);
  await s.kill(); // removes the exited record
  await assert.rejects(s.info(), /session_not_found/);
});

test("a node-pty program that cannot be started exits with code 1 and `ready` rejects with spawn_failed", async () => {
  const { spawn } = await import("@vibest/pty-daemon/node-pty");
  const p = spawn("/nonexistent/program", [], { client });
  const exit = new Promise<{ exitCode: number }>((resolve) => p.onExit(resolve));
  await assert.rejects(p.ready, /spawn_failed/);
  assert.deepEqual(await exit, { exitCode: 1 });
  assert.equal(p.pid, 0);
});

test("resume() after more output than the replay window redraws the screen (RIS + snapshot), then continues live", async () => {
  const small = await Daemon.start({ RUST_PTY_REPLAY_BYTES: "1024" });
  const c = createClient({ socketPath: small.socket, reconnect: false });
  try {
    const { spawn } = await import("@vibest/pty-daemon/node-pty");
    const p = spawn("/bin/sh", [], { client: c });
    let out = "";
    p.onData((d) => (out += d));
    await p.ready;
    const waitFor = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 20_000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(out.slice(-300))}`);
        await sleep(20);
      }
    };
    p.write("echo ready-$((1+1))\n");
    await waitFor(() => out.includes("ready-2"), "the prompt");
    p.pause();
    const mark = out.length;
    p.write("seq 1 3000; echo done-$((2+2))\n"); // ~14 KB: far more than the 1 KiB replay window
    await sleep(1500);
    assert.equal(out.length, mark, "no data while paused");
    p.resume();
    await waitFor(() => out.slice(mark).includes("done-4"), "the redrawn screen");
    assert.ok(out.slice(mark).startsWith("\x1bc"), "a redraw starts with RIS");
    p.write("echo live-$((3+3))\n");
    await waitFor(() => out.slice(mark).includes("live-6"), "live output after the redraw");
    const exited = new Promise((resolve) => p.onExit(resolve));
    p.kill();
    await exited;
  } finally {
    await c.close();
    await small.cleanup();
  }
});
