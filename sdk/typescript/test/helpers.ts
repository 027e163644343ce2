/** Test helpers: a real daemon process in a short temp dir, and event collection. */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from "node:fs";
import * as net from "node:net";
import { dirname, join } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

import { createClient, type ClientEvents, type ClientOptions, type EventName, type OutputEvent, type PtyDaemonClient } from "@vibest/pty-daemon";

const here = dirname(fileURLToPath(import.meta.url));

/** The repository root: the first ancestor of this file holding src/vibest_pty. */
export function repoRoot(): string {
  let d = here;
  for (;;) {
    if (existsSync(join(d, "src", "vibest_pty"))) return d;
    const up = dirname(d);
    if (up === d) throw new Error(`repository root not found above ${here}`);
    d = up;
  }
}

export const ROOT = repoRoot();
export const PYTHON = process.env.VIBEST_PTY_PYTHON || join(ROOT, ".venv", "bin", "python");
export const DAEMON_COMMAND = [PYTHON, "-m", "vibest_pty"];

export function shell(): string {
  return existsSync("/bin/zsh") ? "/bin/zsh" : "/bin/sh";
}

export class Daemon {
  readonly dir: string;
  readonly socket: string;
  readonly logPath: string;
  proc: ChildProcess | null = null;

  constructor(readonly env: Record<string, string> = {}, dir?: string) {
    this.dir = dir ?? mkdtempSync("/tmp/vpts-");
    this.socket = join(this.dir, "pty", "socket");
    this.logPath = join(this.dir, "daemon.log");
  }

  static async start(env: Record<string, string> = {}): Promise<Daemon> {
    const d = new Daemon(env);
    await d.start();
    return d;
  }

  /** The environment a daemon for this socket runs with. */
  daemonEnv(): Record<string, string> {
    return {
      ...(process.env as Record<string, string>),
      RUST_PTY_SOCKET_PATH: this.socket,
      RUST_PTY_LOG_LEVEL: "debug",
      PYTHONPATH: join(ROOT, "src"),
      ...this.env,
    };
  }

  async start(): Promise<void> {
    const log = openSync(this.logPath, "a");
    this.proc = spawn(DAEMON_COMMAND[0]!, DAEMON_COMMAND.slice(1), {
      env: this.daemonEnv(),
      stdio: ["ignore", log, log],
      cwd: ROOT,
    });
    closeSync(log);
    await this.waitReady();
  }

  async waitReady(timeoutMs = 15000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc && this.proc.exitCode !== null) {
        throw new Error(`daemon exited with ${this.proc.exitCode}:\n${this.log()}`);
      }
      if (await canConnect(this.socket)) return;
      await sleep(20);
    }
    throw new Error(`daemon did not start:\n${this.log()}`);
  }

  log(): string {
    try {
      return readFileSync(this.logPath, "utf8").slice(-8000);
    } catch {
      return "";
    }
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once("exit", () => r()));
      p.kill("SIGTERM");
      const t = setTimeout(() => p.kill("SIGKILL"), 10000);
      await exited;
      clearTimeout(t);
    }
  }

  async cleanup(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One daemon and one connected client for a whole test file: started in before() (then handed to `use`), closed and
 * removed in after(). `env` adds RUST_PTY_* settings; `options` are the client's (socketPath is the daemon's).
 */
export function daemonForFile(
  use: (daemon: Daemon, client: PtyDaemonClient) => void,
  env: Record<string, string> = {},
  options: ClientOptions = {},
): void {
  let daemon: Daemon | undefined;
  let client: PtyDaemonClient | undefined;
  before(async () => {
    daemon = await Daemon.start(env);
    client = createClient({ ...options, socketPath: daemon.socket });
    await client.waitForConnection({ timeoutMs: 10000 });
    use(daemon, client);
  });
  after(async () => {
    await client?.close();
    await daemon?.cleanup();
  });
}

export function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolve with the first event of `name` satisfying pred, within timeoutMs. */
export function nextEvent<K extends EventName>(
  client: PtyDaemonClient,
  name: K,
  pred: (ev: ClientEvents[K]) => boolean = () => true,
  timeoutMs = 10000,
): Promise<ClientEvents[K]> {
  return new Promise((resolvePromise, reject) => {
    const fn = (ev: ClientEvents[K]) => {
      if (!pred(ev)) return;
      clearTimeout(t);
      client.off(name, fn);
      resolvePromise(ev);
    };
    const t = setTimeout(() => {
      client.off(name, fn);
      reject(new Error(`no ${name} event within ${timeoutMs} ms`));
    }, timeoutMs);
    client.on(name, fn);
  });
}

/**
 * Collects a session's output (checking offsets are contiguous) as text and bytes. Listens from construction: without
 * a session id it buffers every session's output until bind(id), so nothing sent right after a create is missed.
 */
export class OutputCollector {
  text = "";
  chunks: Uint8Array[] = [];
  length = 0;
  startOffset: number | null = null;
  errors: string[] = [];
  private waiters: Array<() => void> = [];
  private early: OutputEvent[] = [];

  constructor(
    client: PtyDaemonClient,
    public session: number | null = null,
  ) {
    client.on("output", (ev: OutputEvent) => {
      if (this.session === null) this.early.push({ ...ev, bytes: Uint8Array.from(ev.bytes) });
      else this.add(ev);
    });
  }

  bind(session: number): this {
    this.session = session;
    for (const ev of this.early.splice(0)) this.add(ev);
    return this;
  }

  add(ev: OutputEvent): void {
    if (ev.session !== this.session) return;
    if (this.startOffset === null) this.startOffset = ev.offset;
    const expected = this.startOffset + this.length;
    if (ev.offset !== expected) this.errors.push(`offset ${ev.offset}, expected ${expected}`);
    this.text += ev.data;
    this.chunks.push(Uint8Array.from(ev.bytes));
    this.length += ev.bytes.length;
    for (const w of this.waiters.splice(0)) w();
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  async waitFor(pred: (text: string) => boolean, timeoutMs = 10000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.text)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; output so far: ${JSON.stringify(this.text.slice(-500))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.text;
  }

  waitForText(needle: string, timeoutMs = 10000): Promise<string> {
    return this.waitFor((t) => t.includes(needle), timeoutMs);
  }
}

