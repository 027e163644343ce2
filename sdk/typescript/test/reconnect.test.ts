/** Reconnect (no gap, no duplicate; replay or resync) and autoStart (one daemon for concurrent starters). */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { createClient, type ReconnectEvent } from "@vibest/pty-daemon";

import { DAEMON_COMMAND, Daemon, OutputCollector, ROOT, nextEvent, sleep } from "./helpers.js";

function seqText(n: number): string {
  let s = "";
  for (let i = 1; i <= n; i++) s += `${i}\r\n`;
  return s;
}

describe("reconnect", () => {
  let daemon: Daemon;
  before(async () => {
    daemon = await Daemon.start();
  });
  after(async () => {
    await daemon?.cleanup();
  });

  test("socket destroyed twice mid-flood: re-attach with since, no gap, no duplicate", async () => {
    const c = createClient({ socketPath: daemon.socket });
    await c.waitForConnection();
    try {
      const reconnects: ReconnectEvent[] = [];
      c.on("reconnect", (ev) => reconnects.push(ev));
      let disconnects = 0;
      c.on("disconnect", () => disconnects++);
      const resyncs: unknown[] = [];
      c.on("resync", (ev) => resyncs.push(ev));
      const out = new OutputCollector(c);
      // phase 1 (seq 1..100000) is 689 KB, phase 2 (100001..200000) 800 KB: each under the 1 MiB replay window,
      // so whatever the daemon's speed, an outage in one phase misses less than the window.
      const dropAt = [300_000, 689_000 + 300_000];
      c.on("output", () => {
        if (dropAt.length && out.length >= dropAt[0]! && c.connected) {
          dropAt.shift();
          c.dropConnection(); // the daemon is untouched, only this client's socket
        }
      });
      const exit = nextEvent(c, "exit", () => true, 30000);
      const info = await c.createSession({
        shell: "/bin/sh",
        args: ["-c", "seq 1 100000; sleep 1; seq 100001 200000"],
        attach: true,
      });
      out.bind(info.id);
      const ev = await exit;
      assert.equal(ev.code, 0);
      assert.equal(disconnects, 2);
      assert.equal(reconnects.length, 2);
      for (const r of reconnects) {
        assert.equal(r.sessions.length, 1);
        assert.equal(r.sessions[0]!.session, info.id);
        assert.equal(r.sessions[0]!.mode, "replay");
        assert.equal(r.hello.pid, daemon.proc!.pid);
      }
      assert.deepEqual(resyncs, []);
      assert.deepEqual(out.errors, [], "offsets are contiguous");
      assert.equal(out.startOffset, 0);
      const want = seqText(200000);
      assert.equal(out.length, Buffer.byteLength(want));
      assert.ok(out.text === want, "the concatenated output is exactly seq 1 200000");
      assert.equal(c.connected, true);
    } finally {
      await c.close();
    }
  });

  test("requests issued while reconnecting are sent after the re-attach", async () => {
    const c = createClient({ socketPath: daemon.socket, reconnect: { initialDelayMs: 200 } });
    await c.waitForConnection();
    try {
      const info = await c.createSession({ shell: "/bin/sh", args: ["-c", "stty -echo; exec cat"], attach: true });
      const out = new OutputCollector(c, info.id);
      c.dropConnection();
      await sleep(20);
      assert.equal(c.connected, false);
      c.sendInput(info.id, "queued-input\n");
      const list = c.listSessions();
      const reconnected = nextEvent(c, "reconnect");
      assert.ok((await list).some((s) => s.id === info.id));
      await reconnected;
      await out.waitForText("queued-input\r\n");
      await c.kill(info.id);
    } finally {
      await c.close();
    }
  });

  test("outage longer than the replay window: resync event (reason reconnect) and reconnect mode snapshot", async () => {
    const small = await Daemon.start({ RUST_PTY_REPLAY_BYTES: "1024" });
    const c = createClient({ socketPath: small.socket, reconnect: { initialDelayMs: 300 } });
    try {
      await c.waitForConnection();
      const info = await c.createSession({
        shell: "/bin/sh",
        args: ["-c", "stty -echo; read x; seq 1 20000; echo END; exec cat"],
        attach: true,
      });
      const resync = nextEvent(c, "resync");
      const reconnected = nextEvent(c, "reconnect");
      c.dropConnection();
      await sleep(20);
      // output during the outage, produced through another connection
      const other = createClient({ socketPath: small.socket });
      await other.waitForConnection();
      await other.input(info.id, "go\n");
      const r = await reconnected;
      const rs = await resync;
      assert.equal(rs.session, info.id);
      assert.equal(rs.reason, "reconnect");
      assert.equal(r.sessions[0]!.mode, "snapshot");
      assert.equal(r.sessions[0]!.offset, rs.snapshot.offset);
      const out = new OutputCollector(c, info.id);
      c.sendInput(info.id, "after\n");
      await out.waitForText("after");
      assert.ok(out.startOffset! >= rs.snapshot.offset);
      assert.deepEqual(out.errors, []);
      await other.close();
      await c.kill(info.id);
    } finally {
      await c.close();
      await small.cleanup();
    }
  });

  test("after a daemon restart no session is re-attached by id: each is reported daemon_restarted", async () => {
    const d = await Daemon.start();
    // The first retry comes late, so the new daemon has usually given id 1 to a stranger by then.
    const c = createClient({ socketPath: d.socket, reconnect: { initialDelayMs: 1500 } });
    let stranger: ReturnType<typeof createClient> | undefined;
    try {
      const first = await c.waitForConnection();
      const info = await c.createSession({ shell: "/bin/sh", args: ["-c", "exec sleep 100"], attach: true });
      const outputs: number[] = [];
      c.on("output", (ev) => outputs.push(ev.session));
      const errors: string[] = [];
      c.on("error", (e) => errors.push(e.code));
      // SIGKILL: no shutdown, no exit events; the new daemon numbers its sessions from 1 again
      const p = d.proc!;
      const gone = new Promise((r) => p.once("exit", r));
      p.kill("SIGKILL");
      await gone;
      await d.start();
      stranger = createClient({ socketPath: d.socket, reconnect: false });
      await stranger.waitForConnection();
      const other = await stranger.createSession({
        shell: "/bin/sh",
        args: ["-c", "while :; do echo STRANGER; sleep 0.05; done"],
      });
      const r = await nextEvent(c, "reconnect", () => true, 15000);
      assert.notEqual(r.hello.instance, first.instance);
      const s = r.sessions.find((x) => x.session === info.id)!;
      assert.equal(s.mode, "failed");
      assert.equal(s.error?.code, "daemon_restarted");
      assert.deepEqual(errors, ["daemon_restarted"]);
      assert.equal(c.attachedSessions.length, 0);
      await sleep(300);
      assert.deepEqual(outputs, [], `output of session ${other.id} (a stranger's) reached the old client`);
    } finally {
      await stranger?.close();
      await c.close();
      await d.cleanup();
    }
  });
});

describe("autoStart", () => {
  test("concurrent clients in this process and in two other processes start one daemon", async () => {
    const dir = mkdtempSync("/tmp/vpts-");
    const socketPath = join(dir, "pty", "socket");
    const starts = join(dir, "starts.log");
    // The app's command: logs each start, then runs the daemon (which refuses to run twice).
    const autoStart = {
      command: "/bin/sh",
      args: ["-c", `echo $$ >> ${starts}; exec "$0" "$@"`, ...DAEMON_COMMAND],
      cwd: ROOT,
      env: { PYTHONPATH: join(ROOT, "src") },
      logFile: join(dir, "daemon.log"),
    };
    const sdk = fileURLToPath(new URL("../../dist/index.js", import.meta.url));
    const script = `
      import { createClient } from ${JSON.stringify(sdk)};
      const c = createClient({ socketPath: ${JSON.stringify(socketPath)}, autoStart: ${JSON.stringify(autoStart)} });
      const info = await c.waitForConnection({ timeoutMs: 20000 });
      console.log(info.pid);
      await c.close();`;
    const child = () =>
      new Promise<number>((resolve, reject) => {
        const p = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.on("exit", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`child exited ${code}`))));
      });
    const a = createClient({ socketPath, autoStart });
    const b = createClient({ socketPath, autoStart });
    let pid = 0;
    try {
      const results = await Promise.all([
        a.waitForConnection({ timeoutMs: 20000 }).then((h) => h.pid),
        b.waitForConnection({ timeoutMs: 20000 }).then((h) => h.pid),
        child(),
        child(),
      ]);
      pid = results[0]!;
      assert.ok(pid > 0);
      assert.deepEqual(results, [pid, pid, pid, pid], "every client talks to the same daemon");
      const lines = readFileSync(starts, "utf8").trim().split("\n");
      assert.equal(lines.length, 1, `the daemon was started ${lines.length} times`);
      assert.equal(existsSync(`${socketPath}.autostart`), false, "the start lock is released");
    } finally {
      await a.close();
      await b.close();
      if (pid) {
        process.kill(pid, "SIGTERM");
        for (let i = 0; i < 100 && existsSync(socketPath); i++) await sleep(50);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("autoStart with a command that cannot run: error event and a timeout", async () => {
    const dir = mkdtempSync("/tmp/vpts-");
    const c = createClient({ socketPath: join(dir, "pty", "socket"), autoStart: { command: join(dir, "no-such-daemon") } });
    try {
      const err = nextEvent(c, "error");
      await assert.rejects(c.waitForConnection({ timeoutMs: 500 }), /timeout/);
      assert.equal((await err).code, "autostart_failed");
    } finally {
      await c.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
