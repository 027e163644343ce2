/** Every method and event against a real daemon, and error codes as typed errors. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { createClient, defaultSocketPath, PtyDaemonError, type PtyDaemonClient } from "@vibest/pty-daemon";

import { Daemon, OutputCollector, daemonForFile, nextEvent, sleep } from "./helpers.js";

let daemon: Daemon;
let client: PtyDaemonClient;
daemonForFile((d, c) => {
  daemon = d;
  client = c;
});

async function rejectsWith(p: Promise<unknown>, code: string): Promise<PtyDaemonError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PtyDaemonError, `not a PtyDaemonError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected a ${code} rejection`);
}

describe("connection", () => {
  test("socketPath defaults to RUST_PTY_SOCKET_PATH, else $HOME/.vibest/pty/socket", () => {
    assert.equal(defaultSocketPath({ RUST_PTY_SOCKET_PATH: "/x/y", HOME: "/h" }), "/x/y");
    assert.equal(defaultSocketPath({ HOME: "/h" }), "/h/.vibest/pty/socket");
    const saved = process.env.RUST_PTY_SOCKET_PATH;
    process.env.RUST_PTY_SOCKET_PATH = daemon.socket;
    try {
      assert.equal(createClient().socketPath, daemon.socket);
    } finally {
      if (saved === undefined) delete process.env.RUST_PTY_SOCKET_PATH;
      else process.env.RUST_PTY_SOCKET_PATH = saved;
    }
  });

  test("waitForConnection sends hello and resolves with the daemon's info", async () => {
    const info = client.serverInfo!;
    assert.equal(info.protocol, 1);
    assert.equal(typeof info.version, "string");
    assert.equal(info.pid, daemon.proc!.pid);
    assert.ok(info.features.includes("snapshot"));
    assert.equal(client.connected, true);
    assert.deepEqual(await client.waitForConnection(), info); // already connected: immediate
  });

  test("waitForConnection retries until the daemon starts", async () => {
    const late = new Daemon();
    const c = createClient({ socketPath: late.socket });
    try {
      const waiting = c.waitForConnection({ timeoutMs: 15000 });
      await sleep(300);
      await late.start();
      const info = await waiting;
      assert.equal(info.pid, late.proc!.pid);
    } finally {
      await c.close();
      await late.cleanup();
    }
  });

  test("waitForConnection times out with a typed error when no daemon answers", async () => {
    const c = createClient({ socketPath: "/tmp/vpts-none/pty/socket" });
    const t0 = Date.now();
    await rejectsWith(c.waitForConnection({ timeoutMs: 300 }), "timeout");
    assert.ok(Date.now() - t0 < 2000);
    await c.close();
  });

  test("requests before waitForConnection connect lazily", async () => {
    const c = createClient({ socketPath: daemon.socket });
    try {
      const sessions = await c.listSessions();
      assert.ok(Array.isArray(sessions));
      assert.equal(c.connected, true);
    } finally {
      await c.close();
    }
  });

  test("close rejects pending and later requests with code closed and emits close", async () => {
    const c = createClient({ socketPath: daemon.socket });
    await c.waitForConnection();
    const closed = nextEvent(c, "close");
    const pending = c.request("list");
    await c.close();
    await rejectsWith(pending, "closed");
    assert.match((await closed).reason, /closed by the client/);
    await rejectsWith(c.stats(), "closed");
    await rejectsWith(c.waitForConnection(), "closed");
  });
});

describe("sessions", () => {
  test("createSession with every option, attach: true gets output from offset 0 and the exit event", async () => {
    const c = createClient({ socketPath: daemon.socket });
    await c.waitForConnection();
    try {
      const outputs: number[] = [];
      c.on("output", (ev) => outputs.push(ev.offset));
      const exit = nextEvent(c, "exit");
      const out = new OutputCollector(c);
      const info = await c.createSession({
        shell: "/bin/sh",
        args: ["-c", 'printf "%s|%s|" "$FOO" "$(pwd)"; stty size; exit 3'],
        cwd: "/tmp",
        env: { FOO: "bar baz" },
        cols: 100,
        rows: 30,
        name: "build",
        tags: { worktree: "wt-1" },
        attach: true,
      });
      out.bind(info.id);
      assert.equal(info.name, "build");
      assert.deepEqual(info.tags, { worktree: "wt-1" });
      assert.equal(info.cols, 100);
      assert.equal(info.rows, 30);
      assert.deepEqual(info.command.slice(0, 1), ["/bin/sh"]);
      assert.equal(typeof info.pid, "number");
      const ev = await exit;
      assert.deepEqual(ev, { session: info.id, code: 3, signal: null });
      assert.equal(out.startOffset ?? 0, 0);
      assert.deepEqual(out.errors, []);
      assert.match(out.text, /bar baz\|\/tmp\|30 100/);
      assert.equal(outputs[0], 0);
    } finally {
      await c.close();
    }
  });

  test("attachSession returns session, offset and snapshot; output follows; since gives replay", async () => {
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "echo first-line; exec cat"] });
    await sleep(200);
    const res = await client.attachSession(info.id);
    assert.equal(res.session.id, info.id);
    assert.ok(res.offset > 0, "the session already wrote");
    assert.ok(res.snapshot, "snapshot by default");
    assert.equal(res.snapshot!.offset, res.offset);
    assert.equal(res.snapshot!.cols, 80);
    assert.equal(res.snapshot!.rows, 24);
    assert.ok(res.snapshot!.data instanceof Uint8Array);
    assert.equal(res.replay, undefined);
    assert.deepEqual(client.attachedSessions.includes(info.id), true);

    const out = new OutputCollector(client, info.id);
    client.sendInput(info.id, "hello\n");
    await out.waitForText("hello\r\nhello\r\n");
    assert.equal(out.startOffset, res.offset);

    // since: raw bytes from `since`, no snapshot
    const again = await client.attachSession(info.id, { since: 0, snapshot: true });
    assert.equal(again.snapshot, undefined);
    assert.ok(again.replay instanceof Uint8Array);
    assert.equal(again.replay!.length, again.offset);
    assert.match(Buffer.from(again.replay!).toString(), /^first-line\r\nhello\r\nhello\r\n$/);

    // snapshot: false
    const bare = await client.attachSession(info.id, { snapshot: false });
    assert.equal(bare.snapshot, undefined);
    assert.equal(bare.replay, undefined);
    await client.kill(info.id);
  });

  test("detachSession stops the output and the attachment", async () => {
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "exec cat"], attach: true });
    await client.detachSession(info.id);
    assert.equal(client.attachedSessions.includes(info.id), false);
    const listed = (await client.listSessions()).find((s) => s.id === info.id)!;
    assert.equal(listed.clients, 0);
    let got = 0;
    const fn = (ev: { session: number }) => {
      if (ev.session === info.id) got++;
    };
    client.on("output", fn);
    client.sendInput(info.id, "not seen\n");
    await sleep(300);
    client.off("output", fn);
    assert.equal(got, 0);
    await client.kill(info.id);
  });

  test("sendInput takes strings and bytes; input() awaits acceptance", async () => {
    const out = new OutputCollector(client);
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "stty -echo; exec cat"], attach: true });
    out.bind(info.id);
    await sleep(100);
    client.sendInput(info.id, "str-é\n");
    client.sendInput(info.id, new Uint8Array([0x62, 0x69, 0x6e, 0xe4, 0xb8, 0x96, 0x0a])); // "bin世\n"
    client.sendInput(info.id, Buffer.from("buf\n"));
    await client.input(info.id, "awaited\n");
    await out.waitForText("awaited\r\n");
    assert.match(out.text, /str-é\r\nbin世\r\nbuf\r\nawaited\r\n/);
    await client.kill(info.id);
  });

  test("resize changes the PTY size", async () => {
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "exec cat"], attach: true });
    await client.resize(info.id, 132, 43);
    const listed = (await client.listSessions()).find((s) => s.id === info.id)!;
    assert.equal(listed.cols, 132);
    assert.equal(listed.rows, 43);
    const snap = await client.getSnapshot(info.id);
    assert.equal(snap.cols, 132);
    assert.equal(snap.rows, 43);
    await client.kill(info.id);
  });

  test("signal by name and by number", async () => {
    const out = new OutputCollector(client);
    const info = await client.createSession({
      shell: "/bin/sh",
      args: ["-c", 'trap "echo got-int; exit 7" INT; echo ready; while :; do sleep 0.05; done'],
      attach: true,
    });
    out.bind(info.id);
    await out.waitForText("ready");
    const exit = nextEvent(client, "exit", (e) => e.session === info.id);
    await client.signal(info.id, "SIGINT");
    const ev = await exit;
    assert.equal(ev.code, 7);
    assert.match(out.text, /got-int/);

    const out2 = new OutputCollector(client);
    const s2 = await client.createSession({ shell: "/bin/sh", args: ["-c", "echo ready; exec sleep 100"], attach: true });
    out2.bind(s2.id);
    await out2.waitForText("ready");
    const exit2 = nextEvent(client, "exit", (e) => e.session === s2.id);
    await client.signal(s2.id, 15);
    assert.deepEqual(await exit2, { session: s2.id, code: null, signal: 15 });
  });

  test("kill ends a running session (exit event), then removes its record", async () => {
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "exec sleep 100"], attach: true });
    const exit = nextEvent(client, "exit", (e) => e.session === info.id);
    await client.kill(info.id);
    const ev = await exit;
    assert.equal(ev.code, null);
    assert.equal(typeof ev.signal, "number");
    assert.ok((await client.listSessions()).some((s) => s.id === info.id && !s.running));
    await client.kill(info.id);
    assert.ok(!(await client.listSessions()).some((s) => s.id === info.id));
  });

  test("listSessions, getSnapshot and stats", async () => {
    const out = new OutputCollector(client);
    const info = await client.createSession({
      shell: "/bin/sh",
      args: ["-c", "printf 'snap-text'; exec cat"],
      name: "lister",
      tags: { k: "v" },
      attach: true,
    });
    out.bind(info.id);
    await out.waitForText("snap-text");
    const list = await client.listSessions();
    const me = list.find((s) => s.id === info.id)!;
    assert.equal(me.name, "lister");
    assert.deepEqual(me.tags, { k: "v" });
    assert.equal(me.running, true);
    assert.equal(me.clients, 1);
    for (const key of ["pid", "command", "cwd", "title", "created_at", "last_attached_at", "exit_code", "exit_signal"]) {
      assert.ok(key in me, key);
    }

    const snap = await client.getSnapshot(info.id);
    assert.equal(snap.offset, out.length);
    assert.ok(Array.isArray(snap.cursor) && snap.cursor.length === 2);
    for (const key of ["cursor_visible", "alt_screen", "modes", "title", "cwd", "scrollback_lines"]) {
      assert.ok(key in snap, key);
    }

    const stats = await client.stats();
    assert.equal(typeof stats.uptime, "number");
    assert.ok(stats.connections >= 1);
    assert.ok(stats.sessions >= 1);
    assert.ok(stats.running >= 1);
    assert.ok(stats.bytes_out > 0);
    assert.ok(stats.rss > 0);
    assert.ok(stats.queues.some((q) => q.session === info.id && q.level === "green"));
    assert.equal((stats as unknown as Record<string, unknown>).type, undefined);
    await client.kill(info.id);
  });

  test("listSessions follows the daemon's pages (next/after): more than one page, every session once, in order", async () => {
    const tags: Record<string, string> = {};
    for (let i = 0; i < 15; i++) tags[`t${i}`] = "v".repeat(4000); // ~60 KB of metadata each, under the 64 KiB cap
    const ids: number[] = [];
    for (let i = 0; i < 20; i++) ids.push((await client.createSession({ shell: "/bin/sh", args: ["-c", "sleep 60"], tags })).id);
    try {
      // One page holds at most 1 MiB of sessions: 20 of ~60 KB do not fit in one.
      const first = await client.request("list", { after: 0 });
      const page = first.sessions as { id: number }[];
      const mine = page.filter((s) => ids.includes(s.id)).length;
      assert.ok(mine < 20, `the first page holds all ${mine} big sessions`);
      assert.equal(first.next, page[page.length - 1]!.id);
      const all = await client.listSessions();
      assert.deepEqual(all.map((s) => s.id).filter((id) => ids.includes(id)), ids);
      assert.equal(new Set(all.map((s) => s.id)).size, all.length, "no session twice");
    } finally {
      for (const id of ids) await client.kill(id);
    }
  });
});

describe("errors", () => {
  test("session_not_found, invalid_argument, spawn_failed, unknown_type, session_exited as typed errors", async () => {
    let e = await rejectsWith(client.attachSession(987654), "session_not_found");
    assert.equal(e.request, "attach");
    assert.equal(e.session, 987654);
    await rejectsWith(client.getSnapshot(987654), "session_not_found");
    await rejectsWith(client.detachSession(987654), "session_not_found");
    await rejectsWith(client.kill(987654), "session_not_found");

    await rejectsWith(client.createSession({ cwd: "/nonexistent-dir-xyz" }), "invalid_argument");
    await rejectsWith(client.createSession({ cols: 0 }), "invalid_argument");
    e = await rejectsWith(client.createSession({ shell: "/nonexistent/program" }), "spawn_failed");
    assert.match(e.message, /spawn_failed/);
    await rejectsWith(client.request("frobnicate"), "unknown_type");

    const exits = new Set<number>();
    const record = (ev: { session: number }) => exits.add(ev.session);
    client.on("exit", record); // registered before the create: the exit may come in the same read as its reply
    const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "exit 0"], attach: true });
    for (let i = 0; i < 200 && !exits.has(info.id); i++) await sleep(50);
    client.off("exit", record);
    assert.ok(exits.has(info.id), "exit event");
    await rejectsWith(client.resize(info.id, 0, 10), "invalid_argument");
    await rejectsWith(client.signal(info.id, "SIGNOPE"), "invalid_argument");
    await rejectsWith(client.resize(info.id, 80, 24), "session_exited");
    await rejectsWith(client.input(info.id, "x"), "session_exited");
    await rejectsWith(client.signal(info.id, "INT"), "session_exited");
    assert.ok(e instanceof Error && e.name === "PtyDaemonError");
  });

  test("fire-and-forget input errors arrive as error events", async () => {
    const ev = nextEvent(client, "error", (err) => err.session === 424242);
    client.sendInput(424242, "lost");
    const err = await ev;
    assert.ok(err instanceof PtyDaemonError);
    assert.equal(err.code, "session_not_found");
    assert.equal(err.request, "input");
  });

  test("an error event without listeners does not throw", async () => {
    const c = createClient({ socketPath: daemon.socket });
    await c.waitForConnection();
    c.sendInput(434343, "x");
    await c.listSessions(); // the error arrived before this reply: nothing threw
    await c.close();
  });
});

describe("backpressure and resync", () => {
  test("a slow client gets backpressure_warning then resync, and output continues from the snapshot", async () => {
    const small = await Daemon.start({ RUST_PTY_FLOW_MAX_QUEUE_SIZE: "64", RUST_PTY_FLOW_THRESHOLD: "16", RUST_PTY_FLOW_MAX_QUEUE_BYTES: "262144" });
    const c = createClient({ socketPath: small.socket });
    try {
      await c.waitForConnection();
      const levels: string[] = [];
      c.on("backpressure_warning", (ev) => levels.push(ev.level));
      const resync = nextEvent(c, "resync", () => true, 20000);
      let blocked = false;
      let afterResync: number | null = null;
      const offsets: Array<[number, number]> = [];
      c.on("output", (ev) => {
        if (!blocked) {
          blocked = true;
          const until = Date.now() + 1500; // a renderer stuck for 1.5 s
          while (Date.now() < until) {
            /* busy */
          }
        }
        offsets.push([ev.offset, ev.bytes.length]);
      });
      c.on("resync", (ev) => {
        afterResync = ev.snapshot.offset;
        offsets.length = 0;
      });
      const info = await c.createSession({
        shell: "/bin/sh",
        args: ["-c", "seq 1 300000; echo END; exec sleep 100"],
        attach: true,
      });
      const ev = await resync;
      assert.equal(ev.session, info.id);
      assert.equal(ev.reason, "backpressure");
      assert.ok(ev.snapshot.data instanceof Uint8Array);
      assert.ok(levels.includes("red") || levels.includes("yellow"), `levels: ${levels.join(",")}`);
      // Output after the resync is contiguous from snapshot.offset.
      await sleep(1000);
      let next = afterResync!;
      for (const [off, len] of offsets) {
        assert.equal(off, next);
        next += len;
      }
      await c.kill(info.id);
    } finally {
      await c.close();
      await small.cleanup();
    }
  });
});

describe("shutdown", () => {
  test("daemon stop: shutdown, disconnect, then close once reconnecting gives up", async () => {
    const d = await Daemon.start();
    const c = createClient({ socketPath: d.socket, reconnect: { initialDelayMs: 50, giveUpAfterMs: 600 } });
    try {
      await c.waitForConnection();
      const shutdown = nextEvent(c, "shutdown");
      const disconnect = nextEvent(c, "disconnect");
      const close = nextEvent(c, "close");
      await d.stop();
      assert.equal(typeof (await shutdown).reason, "string");
      await disconnect;
      const t0 = Date.now();
      const ev = await close;
      assert.match(ev.reason, /gave up/);
      assert.ok(Date.now() - t0 < 3000);
      assert.equal(c.closed, true);
      await rejectsWith(c.listSessions(), "closed");
    } finally {
      await c.close();
      await d.cleanup();
    }
  });

  test("reconnect: false closes on the first drop", async () => {
    const c = createClient({ socketPath: daemon.socket, reconnect: false });
    await c.waitForConnection();
    const close = nextEvent(c, "close");
    c.dropConnection();
    await close;
    assert.equal(c.closed, true);
  });
});
