import { spawn } from "node:child_process";
import { mkdirSync, openSync, closeSync, statSync, unlinkSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { TextDecoder } from "node:util";

import { DEFAULT_MAX_FRAME, FrameDecoder, FrameError, Malformed, encodeFrame, type Message } from "./codec.js";
import { PtyDaemonError } from "./errors.js";
import { SessionHandle, type CreatedSession } from "./session.js";
import { checkSocketTrust } from "./trust.js";
import { TypedEmitter, type CommandEvent, type ReattachResult } from "./events.js";
import type { Transport, TransportSocket } from "./transport.js";
import { UnixSocketTransport } from "./transport-node.js";
import type {
  AttachOptions,
  AttachResult,
  CreateSessionOptions,
  HelloInfo,
  RunResult,
  SessionInfo,
  SignalSpec,
  Snapshot,
  Stats,
  TextResult,
  WaitCondition,
  WaitResult,
} from "./types.js";

export const PROTOCOL_VERSION = 1;
export const SDK_VERSION = "0.1.0";

export interface ReconnectOptions {
  /** Default true. */
  enabled?: boolean;
  /** First retry delay (ms), default 100; doubled (see factor) after each failed attempt. */
  initialDelayMs?: number;
  /** Delay cap (ms), default 2000. */
  maxDelayMs?: number;
  /** Default 2. */
  factor?: number;
  /** Give up (emit `close`) when the daemon has not answered for this long (ms), default 30000. */
  giveUpAfterMs?: number;
}

export interface AutoStartOptions {
  /** The daemon program, e.g. "vibest-pty-daemon" or a python path (with args ["-m", "vibest_pty"]). */
  command: string;
  args?: string[];
  /** Added to the environment (RUST_PTY_SOCKET_PATH is set to the client's socket path). */
  env?: Record<string, string>;
  cwd?: string;
  /** Append the daemon's stdout/stderr to this file (default: discarded). */
  logFile?: string;
}

export interface ClientOptions {
  /** Default: $RUST_PTY_SOCKET_PATH, else $HOME/.vibest/pty/socket. */
  socketPath?: string;
  /** Sent in hello. */
  clientName?: string;
  /** Reconnect when the connection drops (default: enabled, 100 ms doubling to 2 s, give up after 30 s). */
  reconnect?: boolean | ReconnectOptions;
  /** Start the daemon (detached) when none answers. */
  autoStart?: AutoStartOptions;
  /** Largest frame accepted from the daemon (default 16 MiB, like the daemon). */
  maxFrame?: number;
  /** How to reach the daemon: default its Unix socket (socketPath); in a browser a WebSocketTransport. */
  transport?: Transport;
}

export interface WaitOptions {
  /** Default 10000. */
  timeoutMs?: number;
}

export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.RUST_PTY_SOCKET_PATH) return env.RUST_PTY_SOCKET_PATH;
  return join(env.HOME || homedir(), ".vibest", "pty", "socket");
}

type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

interface Pending {
  resolve: (msg: Message) => void;
  reject: (err: PtyDaemonError) => void;
  /** Runs synchronously when the ok is dispatched, before any later frame (keeps offsets in order). */
  onOk?: (msg: Message) => void;
  /** Runs synchronously when the request fails (error reply, connection lost, client closed). */
  onError?: (err: PtyDaemonError) => void;
}

/** A reply map without its envelope (type, id). */
function strip(msg: Message): Record<string, unknown> {
  const { type: _type, id: _id, ...rest } = msg;
  return rest;
}

function failPending(p: Pending, err: PtyDaemonError): void {
  p.onError?.(err);
  p.reject(err);
}

interface Queued {
  frame: Uint8Array;
  id?: number;
  pending?: Pending;
}

interface SessionState {
  /** The next output offset this client expects. */
  nextOffset: number;
  decoder: TextDecoder;
  /** Re-attached after a reconnect. */
  attached: boolean;
  /** Attached read-only (kept on re-attach). */
  readOnly?: boolean;
}

// Within one process, clients for the same socket start the daemon once.
const autoStarts = new Map<string, Promise<void>>();
const AUTOSTART_LOCK_STALE_MS = 10_000;

function sleep(ms: number, signal?: { cancel?: () => void }): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) {
      signal.cancel = () => {
        clearTimeout(t);
        resolve();
      };
    }
  });
}

/** A client of the vibest-pty daemon: one Unix socket connection, reconnected when it drops. */
export class PtyDaemonClient extends TypedEmitter {
  readonly socketPath: string;
  readonly transport: Transport;
  private readonly clientName: string;
  private readonly reconnectOpts: Required<ReconnectOptions>;
  private readonly autoStart: AutoStartOptions | undefined;
  private readonly maxFrame: number;

  private state: State = "idle";
  private socket: TransportSocket | null = null;
  private frames: FrameDecoder;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private queue: Queued[] = [];
  private sessions = new Map<number, SessionState>();
  private hello: HelloInfo | null = null;
  private connecting: Promise<HelloInfo> | null = null;
  private openWaiters: Array<{ resolve: (h: HelloInfo) => void; reject: (e: PtyDaemonError) => void }> = [];
  private sleeper: { cancel?: () => void } = {};
  private ownedLock: string | null = null;
  private closeError: PtyDaemonError | undefined;

  constructor(options: ClientOptions = {}) {
    super();
    this.socketPath = options.socketPath ?? options.transport?.description ?? defaultSocketPath();
    this.transport = options.transport ?? new UnixSocketTransport(this.socketPath);
    this.clientName = options.clientName ?? `@vibest/pty-daemon ${SDK_VERSION}`;
    const r = options.reconnect;
    const ro: ReconnectOptions = typeof r === "boolean" ? { enabled: r } : (r ?? {});
    this.reconnectOpts = {
      enabled: ro.enabled ?? true,
      initialDelayMs: ro.initialDelayMs ?? 100,
      maxDelayMs: ro.maxDelayMs ?? 2000,
      factor: ro.factor ?? 2,
      giveUpAfterMs: ro.giveUpAfterMs ?? 30_000,
    };
    this.autoStart = options.autoStart;
    this.maxFrame = options.maxFrame ?? DEFAULT_MAX_FRAME;
    this.frames = new FrameDecoder(this.maxFrame);
  }

  /** True while a connection is established and usable. */
  get connected(): boolean {
    return this.state === "open";
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  /** The daemon's hello reply of the current (or last) connection. */
  get serverInfo(): HelloInfo | null {
    return this.hello;
  }

  /** Session ids this client is attached to (re-attached after a reconnect). */
  get attachedSessions(): number[] {
    return [...this.sessions].filter(([, s]) => s.attached).map(([id]) => id);
  }

  // -- connection ---------------------------------------------------------------------------------------------

  /**
   * Connect and send hello, retrying until the daemon answers (it may still be starting) or timeoutMs passes.
   * With autoStart, a daemon is spawned when none answers. Resolves with the daemon's hello reply.
   */
  waitForConnection(options: WaitOptions = {}): Promise<HelloInfo> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    switch (this.state) {
      case "open":
        return Promise.resolve(this.hello!);
      case "closed":
        return Promise.reject(new PtyDaemonError("closed", "the client is closed"));
      case "reconnecting":
        return this.whenOpen(timeoutMs);
      case "connecting":
        return this.connecting ?? this.whenOpen(timeoutMs);
      case "idle":
        break;
    }
    this.state = "connecting";
    const p = this.initialConnect(timeoutMs).then(
      (hello) => {
        this.connecting = null;
        return hello;
      },
      (err: unknown) => {
        this.connecting = null;
        throw err;
      },
    );
    this.connecting = p;
    return p;
  }

  private whenOpen(timeoutMs: number): Promise<HelloInfo> {
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (h: HelloInfo) => {
          clearTimeout(t);
          resolve(h);
        },
        reject: (e: PtyDaemonError) => {
          clearTimeout(t);
          reject(e);
        },
      };
      const t = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== waiter);
        reject(new PtyDaemonError("timeout", `no connection to ${this.socketPath} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.openWaiters.push(waiter);
    });
  }

  private async initialConnect(timeoutMs: number): Promise<HelloInfo> {
    const deadline = Date.now() + timeoutMs;
    let delay = 10;
    let lastError: unknown;
    let started = false;
    while (this.state === "connecting") {
      try {
        const hello = await this.connectOnce(Math.max(1, deadline - Date.now()));
        if (this.state !== "connecting") break;
        this.becomeOpen(hello);
        return hello;
      } catch (err) {
        lastError = err;
        // A daemon that answers with an error (e.g. unsupported_protocol) will not change its mind.
        if (err instanceof PtyDaemonError && (err.reply || err.code === "untrusted_server")) {
          this.state = "idle";
          this.failQueued(err);
          throw err;
        }
      }
      if (this.autoStart && !started) {
        started = true;
        await this.startDaemon();
      }
      if (Date.now() + delay >= deadline) break;
      await sleep(delay, this.sleeper);
      delay = Math.min(delay * 2, 250);
    }
    if (this.state === "closed") throw new PtyDaemonError("closed", "the client was closed while connecting");
    this.state = "idle";
    const reason = lastError instanceof Error ? lastError.message : String(lastError);
    const err = new PtyDaemonError("timeout", `no daemon answered on ${this.socketPath} within ${timeoutMs} ms (${reason})`, {
      cause: lastError,
    });
    this.failQueued(err);
    throw err;
  }

  /** One attempt: connect, install handlers, hello. The socket becomes this.socket; requests still queue. */
  private connectOnce(timeoutMs: number): Promise<HelloInfo> {
    return new Promise<HelloInfo>((resolve, reject) => {
      // The Unix socket's owner is checked (throws untrusted_server: the executor's throw rejects); a WebSocket
      // server is trusted by its URL (and TLS).
      if (this.transport instanceof UnixSocketTransport) checkSocketTrust(this.socketPath);
      const sock = this.transport.connect();
      let settled = false;
      const timer = setTimeout(() => fail(new PtyDaemonError("timeout", "connect/hello timed out")), timeoutMs);
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        if (this.socket === sock) this.socket = null;
        reject(err);
      };
      sock.once("error", fail);
      sock.once("connect", () => {
        if (settled) return;
        sock.off("error", fail);
        this.attachSocket(sock);
        this.request("hello", { protocol: PROTOCOL_VERSION, client: this.clientName }, { direct: true }).then(
          (msg) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({
              protocol: msg.protocol as number,
              version: msg.version as string,
              pid: msg.pid as number,
              features: (msg.features as string[]) ?? [],
              instance: msg.instance as string,
              started_at: msg.started_at as number,
            });
          },
          fail,
        );
      });
    });
  }

  private attachSocket(sock: TransportSocket): void {
    this.socket = sock;
    this.frames = new FrameDecoder(this.maxFrame);
    sock.setNoDelay?.(true);
    sock.on("data", (chunk: Uint8Array) => {
      if (this.socket !== sock) return;
      this.onData(chunk, sock);
    });
    sock.on("error", () => {
      /* 'close' follows */
    });
    sock.on("close", () => this.onSocketClose(sock, "connection closed"));
  }

  private becomeOpen(hello: HelloInfo): void {
    this.hello = hello;
    this.state = "open";
    this.releaseLock();
    const queued = this.queue;
    this.queue = [];
    for (const q of queued) this.write(q);
    const waiters = this.openWaiters;
    this.openWaiters = [];
    for (const w of waiters) w.resolve(hello);
  }

  private onSocketClose(sock: TransportSocket, reason: string): void {
    if (this.socket !== sock) return;
    this.socket = null;
    const lost = new PtyDaemonError("connection_lost", `${reason} before the reply`);
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) failPending(p, lost);
    if (this.state !== "open") return; // a connect attempt: its caller handles the failure
    this.emit("disconnect", { reason });
    if (this.reconnectOpts.enabled) {
      this.state = "reconnecting";
      void this.reconnectLoop();
    } else {
      this.finalize(reason);
    }
  }

  private async reconnectLoop(): Promise<void> {
    const o = this.reconnectOpts;
    const started = Date.now();
    let delay = o.initialDelayMs;
    let attempts = 0;
    let autoStarted = false;
    while (this.state === "reconnecting") {
      await sleep(delay, this.sleeper);
      if (this.state !== "reconnecting") return;
      attempts++;
      let hello: HelloInfo | null = null;
      try {
        hello = await this.connectOnce(Math.max(1000, o.maxDelayMs));
      } catch (err) {
        if (err instanceof PtyDaemonError && err.code === "untrusted_server") {
          this.emit("error", err);
          this.finalize(err.message, err);
          return;
        }
        if (this.autoStart && !autoStarted && this.state === "reconnecting") {
          autoStarted = true;
          await this.startDaemon();
        }
      }
      if (this.state !== "reconnecting") return;
      if (hello && (await this.reattachAll(hello, attempts, started))) return;
      if (this.state !== "reconnecting") return;
      if (Date.now() - started + delay >= o.giveUpAfterMs) {
        this.finalize(`no daemon answered on ${this.socketPath} for ${o.giveUpAfterMs} ms, gave up reconnecting`);
        return;
      }
      delay = Math.min(delay * o.factor, o.maxDelayMs);
    }
  }

  /**
   * Re-attach every attached session with since = the next offset it expected. Each ok is applied synchronously
   * during dispatch (replay emitted as output, or a resync), and once the last one is in, the client opens and emits
   * `reconnect` right away, before any later frame. Resolves false if the connection dropped meanwhile.
   */
  private reattachAll(hello: HelloInfo, attempts: number, started: number): Promise<boolean> {
    const sock = this.socket;
    const results: ReattachResult[] = [];
    // Another daemon instance (restarted, not upgraded in place) reuses session ids for other programs: never
    // re-attach by id, report each session failed.
    const before = this.hello?.instance;
    if (before !== undefined && hello.instance !== before) {
      for (const id of this.attachedSessions) {
        const error = new PtyDaemonError(
          "daemon_restarted",
          `the daemon restarted (instance ${before} is now ${String(hello.instance)}); session ${id} is gone`,
          { session: id },
        );
        results.push({ session: id, since: this.sessions.get(id)!.nextOffset, mode: "failed", error });
        this.sessions.delete(id);
        this.emit("error", error);
      }
    }
    const ids = this.attachedSessions;
    let remaining = ids.length;
    return new Promise<boolean>((resolve) => {
      const done = () => {
        if (this.state !== "reconnecting" || this.socket !== sock || sock === null) {
          resolve(false);
          return;
        }
        this.becomeOpen(hello);
        this.emit("reconnect", { attempts, downtimeMs: Date.now() - started, hello, sessions: results });
        resolve(true);
      };
      if (remaining === 0) {
        done();
        return;
      }
      for (const id of ids) {
        const st = this.sessions.get(id)!;
        const since = st.nextOffset;
        const result: ReattachResult = { session: id, since, mode: "failed" };
        results.push(result);
        this.request(
          "attach",
          { session: id, snapshot: true, since, ...(st.readOnly ? { read_only: true } : {}) },
          {
            direct: true,
            onOk: (ok) => {
              const offset = ok.offset as number;
              result.offset = offset;
              const replay = ok.replay as Uint8Array | undefined | null;
              if (replay != null) {
                result.mode = "replay";
                result.replayedBytes = replay.length;
                if (replay.length > 0) this.handleOutput(id, replay, since);
                st.nextOffset = offset;
              } else {
                result.mode = "snapshot";
                st.nextOffset = offset;
                st.decoder = new TextDecoder();
                const snapshot = ok.snapshot as Snapshot | undefined;
                if (snapshot) this.emit("resync", { session: id, snapshot, reason: "reconnect" });
              }
              if (--remaining === 0) done();
            },
            onError: (e) => {
              result.error = e;
              if (e.code === "connection_lost" || e.code === "closed" || this.state !== "reconnecting") {
                resolve(false);
                return;
              }
              this.sessions.delete(id);
              this.emit("error", e);
              if (--remaining === 0) done();
            },
          },
        ).catch(() => {
          /* handled by onError */
        });
      }
    });
  }

  private finalize(reason: string, error?: PtyDaemonError): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.sleeper.cancel?.();
    this.releaseLock();
    const closed = error ?? new PtyDaemonError("closed", reason);
    this.closeError = closed;
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) failPending(p, closed);
    this.failQueued(closed);
    for (const w of this.openWaiters) w.reject(closed);
    this.openWaiters = [];
    const sock = this.socket;
    this.socket = null;
    sock?.destroy();
    this.emit("close", error ? { reason, error } : { reason });
  }

  private failQueued(err: PtyDaemonError): void {
    const queued = this.queue;
    this.queue = [];
    for (const q of queued) if (q.pending) failPending(q.pending, err);
  }

  /** Close the connection for good (no reconnect). Pending requests reject with code `closed`. */
  async close(): Promise<void> {
    const sock = this.socket;
    this.finalize("closed by the client");
    if (sock && !sock.closed) await new Promise<void>((resolve) => sock.once("close", () => resolve()));
  }

  /**
   * Destroy the current socket as if the connection broke (the daemon is not touched): the client reconnects and
   * re-attaches like after a real outage. For tests and diagnostics.
   */
  dropConnection(): void {
    this.socket?.destroy();
  }

  // -- frames in ----------------------------------------------------------------------------------------------

  private onData(chunk: Uint8Array, sock: TransportSocket): void {
    let messages;
    try {
      messages = this.frames.push(chunk);
    } catch (err) {
      // An unframeable stream: a protocol error, reported and the client closed (reconnecting would not help).
      const e = new PtyDaemonError("bad_frame", err instanceof FrameError ? err.message : String(err));
      this.emit("error", e);
      this.finalize(`protocol error: ${e.message}`, e);
      return;
    }
    for (const msg of messages) {
      // A socket destroyed by a handler (dropConnection, close) delivers nothing more, as a broken one would:
      // what it had buffered is replayed from the daemon on reconnect.
      if (this.state === "closed" || sock.destroyed) return;
      if (msg instanceof Malformed) {
        this.emit("error", new PtyDaemonError("bad_message", `the daemon sent a malformed message: ${msg.reason}`));
        continue;
      }
      this.dispatch(msg);
    }
  }

  private dispatch(msg: Message): void {
    const type = msg.type;
    if ((type === "ok" || type === "error") && typeof msg.id === "number") {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (type === "ok") {
        p.onOk?.(msg);
        p.resolve(msg);
      } else {
        failPending(p, PtyDaemonError.fromReply(msg));
      }
      return;
    }
    switch (type) {
      case "output":
        this.handleOutput(msg.session as number, msg.data as Uint8Array, msg.offset as number);
        break;
      case "exit": {
        const id = msg.session as number;
        this.sessions.delete(id);
        this.emit("exit", { session: id, code: (msg.code as number | null) ?? null, signal: (msg.signal as number | null) ?? null });
        break;
      }
      case "backpressure_warning":
        this.emit("backpressure_warning", {
          session: msg.session as number,
          queue_size: msg.queue_size as number,
          level: msg.level as "yellow" | "red",
        });
        break;
      case "resync": {
        const id = msg.session as number;
        const snapshot = msg.snapshot as Snapshot;
        const st = this.sessionState(id, snapshot.offset);
        st.nextOffset = snapshot.offset;
        st.decoder = new TextDecoder();
        this.emit("resync", { session: id, snapshot, reason: "backpressure" });
        break;
      }
      case "shutdown":
        this.emit("shutdown", { reason: typeof msg.reason === "string" ? msg.reason : "" });
        break;
      case "upgraded":
        this.emit("upgraded", {
          version: typeof msg.version === "string" ? msg.version : "",
          previous_version: typeof msg.previous_version === "string" ? msg.previous_version : "",
        });
        break;
      case "command":
        this.emit("command", msg as unknown as CommandEvent);
        break;
      case "session_created":
        this.emit("session_created", { session: msg.session as number, info: msg.info as SessionInfo });
        break;
      case "session_exited":
        this.emit("session_exited", {
          session: msg.session as number, code: (msg.code as number | null) ?? null, signal: (msg.signal as number | null) ?? null,
        });
        break;
      case "session_removed":
        this.emit("session_removed", { session: msg.session as number });
        break;
      case "error":
        this.emit("error", PtyDaemonError.fromReply(msg));
        break;
      default:
        // Unknown events are ignored (forward compatibility).
        break;
    }
  }

  private sessionState(id: number, offset: number): SessionState {
    let st = this.sessions.get(id);
    if (!st) {
      st = { nextOffset: offset, decoder: new TextDecoder(), attached: false };
      this.sessions.set(id, st);
    }
    return st;
  }

  private handleOutput(id: number, data: Uint8Array, offset: number): void {
    const st = this.sessionState(id, offset);
    let bytes = data;
    let off = offset;
    const end = off + bytes.length;
    if (end <= st.nextOffset && bytes.length > 0) return; // already delivered (never expected from the daemon)
    if (off < st.nextOffset) {
      bytes = bytes.subarray(st.nextOffset - off);
      off = st.nextOffset;
    }
    st.nextOffset = end;
    const text = st.decoder.decode(bytes, { stream: true });
    this.emit("output", { session: id, data: text, bytes, offset: off });
  }

  // -- frames out ---------------------------------------------------------------------------------------------

  private write(q: Queued): void {
    if (q.pending && q.id !== undefined) this.pending.set(q.id, q.pending);
    this.socket!.write(q.frame);
  }

  private send(q: Queued, direct: boolean): void {
    if (this.state === "closed") {
      const err = this.closeError ?? new PtyDaemonError("closed", "the client is closed");
      if (q.pending) failPending(q.pending, err);
      else throw err;
      return;
    }
    if ((this.state === "open" || direct) && this.socket) {
      this.write(q);
      return;
    }
    // Not connected yet, or reconnecting: sent once the connection is (re-)established.
    this.queue.push(q);
    if (this.state === "idle") {
      this.waitForConnection().catch(() => {
        /* queued requests are rejected by initialConnect */
      });
    }
  }

  /**
   * Send a request and wait for its reply: resolves with the `ok` map, rejects with a PtyDaemonError carrying the
   * daemon's error code. A raw helper for requests this SDK has no method for.
   */
  request(
    type: string,
    fields: Record<string, unknown> = {},
    opts: { direct?: boolean; onOk?: (msg: Message) => void; onError?: (err: PtyDaemonError) => void } = {},
  ): Promise<Message> {
    const id = this.nextId++;
    return new Promise<Message>((resolve, reject) => {
      const pending: Pending = { resolve, reject };
      if (opts.onOk) pending.onOk = opts.onOk;
      if (opts.onError) pending.onError = opts.onError;
      let frame: Uint8Array;
      try {
        frame = encodeFrame({ type, id, ...fields });
      } catch (err) {
        reject(new PtyDaemonError("invalid_argument", `cannot encode the request: ${String(err)}`));
        return;
      }
      this.send({ frame, id, pending }, opts.direct ?? false);
    });
  }

  /** Send a message as is, without an id (fire-and-forget; failures arrive as `error` events). */
  sendRaw(message: Record<string, unknown>): void {
    this.send({ frame: encodeFrame(message) }, false);
  }

  // -- the API ------------------------------------------------------------------------------------------------

  /**
   * Create a session; resolves with a handle on it (SessionHandle) carrying the SessionInfo of the reply. With
   * attach: true this client gets its output from byte 0.
   */
  async createSession(options: CreateSessionOptions = {}): Promise<CreatedSession> {
    const opts: Record<string, unknown> = {};
    // Field order as in the protocol's vectors.
    const keys = ["shell", "args", "cwd", "env", "cols", "rows", "name", "tags", "attach", "queries", "colors",
      "size_policy", "kill_after_detach_s", "env_mode", "shell_integration"] as const;
    for (const k of keys) {
      if (options[k] !== undefined) opts[k] = options[k];
    }
    const ok = await this.request(
      "create",
      { options: opts },
      {
        onOk: (msg) => {
          if (options.attach) {
            const info = msg.session as SessionInfo;
            this.sessionState(info.id, 0).attached = true;
          }
        },
      },
    );
    return Object.assign(new SessionHandle(this, (ok.session as SessionInfo).id), ok.session as SessionInfo);
  }

  /** A handle on session `id`: its own events (onData, onExit, ...) and methods (write, resize, kill, ...). */
  session(id: number): SessionHandle {
    return new SessionHandle(this, id);
  }

  /**
   * Subscribe to a session's output. Resolves with {session, offset, snapshot?, replay?}: `output` events follow
   * from `offset`. The session's text decoder is reset. Re-attached automatically after a reconnect.
   */
  async attachSession(id: number, options: AttachOptions = {}): Promise<AttachResult> {
    const fields: Record<string, unknown> = { session: id, snapshot: options.snapshot ?? true };
    if (options.since !== undefined) fields.since = options.since;
    if (options.read_only !== undefined) fields.read_only = options.read_only;
    if (options.colors !== undefined) fields.colors = options.colors;
    const ok = await this.request("attach", fields, {
      onOk: (msg) => {
        this.sessions.set(id, {
          nextOffset: msg.offset as number,
          decoder: new TextDecoder(),
          attached: true,
          readOnly: options.read_only === true,
        });
      },
    });
    const result: AttachResult = { session: ok.session as SessionInfo, offset: ok.offset as number };
    if (ok.snapshot != null) result.snapshot = ok.snapshot as Snapshot;
    if (ok.replay != null) result.replay = ok.replay as Uint8Array;
    return result;
  }

  /** Stop receiving a session's output (it keeps running). */
  async detachSession(id: number): Promise<void> {
    await this.request("detach", { session: id }, {
      onOk: () => {
        const st = this.sessions.get(id);
        if (st) st.attached = false;
      },
    });
  }

  /** Write to the session's terminal: fire-and-forget (no reply); failures arrive as `error` events. */
  sendInput(id: number, data: string | Uint8Array): void {
    this.sendRaw({ type: "input", session: id, data });
  }

  /** Like sendInput, but waits for the daemon to accept the input (rejects on error). */
  async input(id: number, data: string | Uint8Array): Promise<void> {
    await this.request("input", { session: id, data });
  }

  async resize(id: number, cols: number, rows: number): Promise<void> {
    await this.request("resize", { session: id, cols, rows });
  }

  /** SIGHUP then SIGKILL after a grace; the `exit` event follows. On an exited session: removes its record. */
  async kill(id: number): Promise<void> {
    await this.request("kill", { session: id });
  }

  /** Deliver a signal ("SIGINT", "INT" or a number) to the terminal's foreground process group. */
  async signal(id: number, signal: SignalSpec): Promise<void> {
    await this.request("signal", { session: id, signal });
  }

  /** Every session; follows the daemon's pages (`next`, docs/protocol.md) so a long list is never cut short. */
  async listSessions(): Promise<SessionInfo[]> {
    const sessions: SessionInfo[] = [];
    let after = 0;
    for (;;) {
      const reply = await this.request("list", { after });
      sessions.push(...(reply.sessions as SessionInfo[]));
      if (reply.next === undefined || reply.next === null) return sessions;
      after = reply.next as number;
    }
  }

  /** Type `command` at the shell's prompt and wait for its end (shell integration; docs/protocol.md "Agents"). */
  async runCommand(id: number, command: string, opts: { timeoutMs?: number } = {}): Promise<RunResult> {
    const fields: Record<string, unknown> = { session: id, command };
    if (opts.timeoutMs !== undefined) fields.timeout_ms = opts.timeoutMs;
    return strip(await this.request("run", fields)) as unknown as RunResult;
  }

  /** Resolves as soon as the condition holds (at once if it already does). */
  async waitFor(id: number, condition: WaitCondition): Promise<WaitResult> {
    const fields: Record<string, unknown> = { session: id, for: condition.for };
    if (condition.timeoutMs !== undefined) fields.timeout_ms = condition.timeoutMs;
    if (condition.for === "idle" && condition.idleMs !== undefined) fields.idle_ms = condition.idleMs;
    if (condition.for === "text") fields.pattern = condition.pattern;
    return strip(await this.request("wait", fields)) as unknown as WaitResult;
  }

  /** Plain text rendered by the daemon's emulator: a scope, or the output after an offset (`{ since }`). */
  async getText(id: number, scope: "screen" | "scrollback" | "all" | { since: number } = "screen"): Promise<TextResult> {
    const fields: Record<string, unknown> = { session: id };
    if (typeof scope === "string") fields.scope = scope;
    else fields.since = scope.since;
    return strip(await this.request("text", fields)) as unknown as TextResult;
  }

  /** session_created / session_exited / session_removed and command end events of every session. */
  async watch(): Promise<SessionInfo[]> {
    return (await this.request("watch")).sessions as SessionInfo[];
  }

  async unwatch(): Promise<void> {
    await this.request("unwatch");
  }

  async getSnapshot(id: number): Promise<Snapshot> {
    return (await this.request("snapshot", { session: id })).snapshot as Snapshot;
  }

  async stats(): Promise<Stats> {
    const { type: _t, id: _i, ...rest } = await this.request("stats");
    return rest as unknown as Stats;
  }

  // -- auto start ---------------------------------------------------------------------------------------------

  /**
   * Spawn the daemon, detached, at most once at a time per socket path: within this process by a shared promise,
   * across processes by a lock file (`<socket>.autostart`, O_EXCL, stale after 10 s). The daemon itself also refuses
   * to run twice (a lock next to the socket), so a lost race costs a process that exits at once.
   */
  private startDaemon(): Promise<void> {
    let p = autoStarts.get(this.socketPath);
    if (!p) {
      p = this.spawnDaemon().finally(() => {
        setTimeout(() => autoStarts.delete(this.socketPath), 1000).unref();
      });
      autoStarts.set(this.socketPath, p);
    }
    return p;
  }

  private async spawnDaemon(): Promise<void> {
    const a = this.autoStart!;
    const lock = `${this.socketPath}.autostart`;
    try {
      mkdirSync(dirname(this.socketPath), { recursive: true, mode: 0o700 });
    } catch {
      /* the daemon reports it */
    }
    let fd: number;
    try {
      fd = openSync(lock, "wx", 0o600);
    } catch {
      try {
        if (Date.now() - statSync(lock).mtimeMs < AUTOSTART_LOCK_STALE_MS) return; // another client is starting it
        unlinkSync(lock);
        fd = openSync(lock, "wx", 0o600);
      } catch {
        return;
      }
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    this.ownedLock = lock;
    let out: number | "ignore" = "ignore";
    if (a.logFile) out = openSync(a.logFile, "a");
    try {
      const child = spawn(a.command, a.args ?? [], {
        detached: true,
        stdio: ["ignore", out, out],
        cwd: a.cwd,
        env: { ...process.env, RUST_PTY_SOCKET_PATH: this.socketPath, ...a.env },
      });
      child.on("error", (err) => {
        this.releaseLock();
        this.emit("error", new PtyDaemonError("autostart_failed", `cannot start ${a.command}: ${err.message}`));
      });
      child.unref();
    } finally {
      if (typeof out === "number") closeSync(out);
    }
  }

  private releaseLock(): void {
    if (this.ownedLock) {
      try {
        unlinkSync(this.ownedLock);
      } catch {
        /* gone */
      }
      this.ownedLock = null;
    }
  }
}

/** Create a client. Nothing connects until waitForConnection() or the first request. */
export function createClient(options: ClientOptions = {}): PtyDaemonClient {
  return new PtyDaemonClient(options);
}
