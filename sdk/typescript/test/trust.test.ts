/**
 * The SDK refuses a daemon socket another user may have created (#11 item 6): Node has no SO_PEERCRED, so it checks
 * that the socket and its directory belong to us or root and that the directory is not writable by others (unless
 * sticky). A refused socket gets no byte from the client.
 */
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";

import { checkSocketTrust, createClient, PtyDaemonError } from "@vibest/pty-daemon";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A listener on `<dir>/socket` that records whether anyone connected. */
async function fakeDaemon(mode: number): Promise<{ path: string; dir: string; connected: () => boolean; close: () => Promise<void> }> {
  const base = mkdtempSync("/tmp/vpts-trust-");
  dirs.push(base);
  const dir = join(base, "d");
  mkdirSync(dir);
  chmodSync(dir, mode);
  const path = join(dir, "socket");
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, dir, connected: () => connections > 0, close: () => new Promise((r) => server.close(() => r())) };
}

async function refused(path: string): Promise<PtyDaemonError> {
  const client = createClient({ socketPath: path, reconnect: false });
  const started = Date.now();
  try {
    await client.waitForConnection({ timeoutMs: 5000 });
  } catch (err) {
    assert.ok(err instanceof PtyDaemonError);
    assert.ok(Date.now() - started < 4000, "refused at once, not retried until the timeout");
    return err;
  } finally {
    await client.close();
  }
  throw new Error("the client connected");
}

test("a socket in a directory others can write to is refused before any byte is sent", async () => {
  const d = await fakeDaemon(0o777);
  try {
    const err = await refused(d.path);
    assert.equal(err.code, "untrusted_server");
    assert.match(err.message, /writable by other users/);
    assert.equal(d.connected(), false);
  } finally {
    await d.close();
  }
});

test("a socket owned by another user is refused", async () => {
  const d = await fakeDaemon(0o700);
  try {
    if (process.getuid!() === 0) {
      chownSync(d.path, 65534, 65534); // as root: make it nobody's; root-owned sockets are trusted
      const err = await refused(d.path);
      assert.equal(err.code, "untrusted_server");
      assert.match(err.message, /belongs to uid 65534/);
      assert.equal(d.connected(), false);
    } else {
      assert.throws(() => checkSocketTrust(d.path, process.getuid!() + 4242), /untrusted_server: .*belongs to uid/);
    }
  } finally {
    await d.close();
  }
});

test("our own socket in a private or a sticky shared directory is accepted", async () => {
  for (const mode of [0o700, 0o1777]) {
    const d = await fakeDaemon(mode);
    try {
      assert.doesNotThrow(() => checkSocketTrust(d.path));
      const client = createClient({ socketPath: d.path, reconnect: false });
      // The fake daemon hangs up without a hello reply: the client connected, so it trusted the socket.
      await client.waitForConnection({ timeoutMs: 300 }).catch(() => {});
      await client.close();
      assert.equal(d.connected(), true, `mode ${mode.toString(8)}`);
    } finally {
      await d.close();
    }
  }
});

test("a missing socket is not a trust problem: connecting fails as usual", () => {
  assert.doesNotThrow(() => checkSocketTrust("/tmp/vpts-no-such-dir/socket"));
});
