/** Agent methods against a real daemon and a real bash: runCommand, waitFor, getText, watch and their events. */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { test } from "node:test";

import { createClient, PtyDaemonError, type CommandEvent, type PtyDaemonClient } from "@vibest/pty-daemon";

import { Daemon, daemonForFile, sleep } from "./helpers.js";

let daemon: Daemon;
let client: PtyDaemonClient;
const home = mkdtempSync("/tmp/vpts-home-");
daemonForFile((d, c) => {
  daemon = d;
  client = c;
});

async function bash(c: PtyDaemonClient): Promise<number> {
  const s = await c.createSession({ shell: "bash", cwd: home, env: { HOME: home, HISTFILE: "" } });
  return s.id;
}

test("runCommand returns the exit code and rendered output; timeout and busy are typed errors", async () => {
  const id = await bash(client);
  assert.equal((await client.waitFor(id, { for: "prompt", timeoutMs: 10000 })).shell_state, "prompt");
  const ok = await client.runCommand(id, "echo hi; printf 'x\\ry\\n'; sh -c 'exit 3'", { timeoutMs: 20000 });
  assert.equal(ok.exit_code, 3);
  assert.equal(ok.output, "hi\ny");
  assert.equal(ok.truncated, false);
  const since = await client.getText(id, { since: ok.output_offsets[0] });
  assert.ok(since.text.startsWith("hi\ny"), since.text);
  assert.ok((await client.getText(id, "screen")).text.includes("hi"));
  await assert.rejects(client.runCommand(id, "echo start; sleep 20", { timeoutMs: 800 }), (err: unknown) =>
    err instanceof PtyDaemonError && err.code === "timeout");
  await assert.rejects(client.runCommand(id, "true"), (err: unknown) => err instanceof PtyDaemonError && err.code === "busy");
  const info = (await client.listSessions()).find((s) => s.id === id);
  assert.equal(info?.shell_state, "running");
  assert.equal(info?.last_command?.command, "echo start; sleep 20");
  await client.kill(id);
});

test("waitFor text and idle; watch sees sessions and command ends of another connection", async () => {
  const events: string[] = [];
  const ends: CommandEvent[] = [];
  client.on("session_created", (e) => events.push(`created ${e.session}`));
  client.on("session_exited", (e) => events.push(`exited ${e.session} ${e.code}`));
  client.on("session_removed", (e) => events.push(`removed ${e.session}`));
  client.on("command", (e) => { if (e.phase === "end") ends.push(e); });
  await client.watch();
  const other = createClient({ socketPath: daemon.socket });
  await other.waitForConnection({ timeoutMs: 10000 });
  const id = await bash(other);
  await other.waitFor(id, { for: "prompt", timeoutMs: 10000 });
  const seen = other.waitFor(id, { for: "text", pattern: "ready-\\d+", timeoutMs: 10000 });
  await other.input(id, "echo ready-$((40+2))\r");
  assert.equal((await seen).match, "ready-42");
  assert.ok((await other.waitFor(id, { for: "idle", idleMs: 100, timeoutMs: 10000 })).offset > 0);
  await other.runCommand(id, "sh -c 'exit 5'", { timeoutMs: 10000 });
  const exited = other.waitFor(id, { for: "exit", timeoutMs: 10000 });
  await other.input(id, "exit 2\r");
  assert.equal((await exited).code, 2);
  await other.kill(id); // removes the exited record
  for (let i = 0; i < 100 && !events.includes(`removed ${id}`); i++) await sleep(50);
  assert.deepEqual(events.filter((e) => e.endsWith(` ${id}`) || e.includes(` ${id} `)),
    [`created ${id}`, `exited ${id} 2`, `removed ${id}`]);
  assert.ok(ends.some((e) => e.session === id && e.exit_code === 5));
  await client.unwatch();
  await other.close();
});
