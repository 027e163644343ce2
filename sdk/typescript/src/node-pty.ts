/**
 * `@vibest/pty-daemon/node-pty`: node-pty's `spawn()` and `IPty` (microsoft/node-pty, typings/node-pty.d.ts), backed
 * by a daemon session, so an app written against node-pty changes only its import and its terminals survive the app.
 *
 * Defaults as node-pty's: cwd = process.cwd(), env = process.env sent whole (create option env_mode "replace", so the
 * session sees exactly the app's environment, not the daemon's), TERM = options.name, else env.TERM, else "xterm";
 * with env === process.env, TMUX, TMUX_PANE, STY, WINDOW, WINDOWID, TERMCAP, COLUMNS and LINES are left
 * out, as node-pty does. Data is UTF-8 text (encoding "utf8") or Buffers (encoding null).
 *
 * Differences a daemon implies (documented in the README):
 * - spawn() returns at once, the session is created asynchronously: `pid` is 0 until then (`ready` resolves when it
 *   is known); writes and resizes made before are sent after the create, in order.
 * - A program that cannot be started gives onExit {exitCode: 1} (and `ready` rejects with the daemon's error).
 * - `process` is refreshed in the background when read (at most every PROCESS_REFRESH_MS): a read returns the value
 *   of a previous refresh. node-pty reads it synchronously from the PTY.
 * - `kill(signal)` delivers the signal to the terminal's foreground process group; kill() with no signal hangs the
 *   session up (SIGHUP, then SIGKILL after the daemon's grace), as node-pty's default SIGHUP.
 * - pause() detaches from the session (the daemon keeps reading it: a daemon session never blocks its program) and
 *   resume() re-attaches from the next byte: replayed exactly from the daemon's replay window (1 MiB by default),
 *   or, when more was missed, the screen is redrawn (RIS and a snapshot) as after a resync.
 * - A resync (this client fell too far behind) delivers RIS + the snapshot as data: the terminal is redrawn.
 * - The exited session's record is removed from the daemon after onExit (node-pty keeps nothing either).
 *
 * All ptys share one client (configure() sets its options, or hand one in as options.client); it is closed when the
 * last pty of this module has exited, so an app that is done can end as it would with node-pty.
 */
import { createClient, type ClientOptions, type PtyDaemonClient } from "./client.js";
import { PtyDaemonError } from "./errors.js";
import type { ExitEvent, OutputEvent, ReconnectEvent, ResyncEvent } from "./events.js";
import type { IDisposable } from "./session.js";

export type { IDisposable } from "./session.js";

/** node-pty's IEvent: call it with a listener, get an IDisposable. */
export interface IEvent<T> {
  (listener: (e: T) => unknown): IDisposable;
}

export interface IBasePtyForkOptions {
  /** $TERM of the child (default: env.TERM, else "xterm"). */
  name?: string;
  cols?: number;
  rows?: number;
  /** Default process.cwd(). */
  cwd?: string;
  /** The child's whole environment (default process.env). */
  env?: { [key: string]: string | undefined };
  /** "utf8" (default): onData gets strings; null: Buffers. */
  encoding?: string | null;
  handleFlowControl?: boolean;
  /** Default XOFF "\x13". */
  flowControlPause?: string;
  /** Default XON "\x11". */
  flowControlResume?: string;
}

export interface IPtyForkOptions extends IBasePtyForkOptions {
  /** Not supported (the daemon runs sessions as its own user): spawn throws when set. */
  uid?: number;
  gid?: number;
  /** The client to create the session with (default: the module's shared client, see configure()). */
  client?: PtyDaemonClient;
  /** Extra daemon create options (session name, tags, kill_after_detach_s ...). */
  session?: { name?: string; tags?: Record<string, string>; kill_after_detach_s?: number };
}

/** Accepted for node-pty compatibility; the Windows-only fields are ignored. */
export interface IWindowsPtyForkOptions extends IPtyForkOptions {
  useConpty?: boolean;
  conptyInheritCursor?: boolean;
}

export interface IPty {
  readonly pid: number;
  readonly cols: number;
  readonly rows: number;
  readonly process: string;
  handleFlowControl: boolean;
  readonly onData: IEvent<string>;
  readonly onExit: IEvent<{ exitCode: number; signal?: number }>;
  on(event: "data", listener: (data: string) => void): void;
  on(event: "exit", listener: (exitCode: number, signal?: number) => void): void;
  resize(columns: number, rows: number): void;
  clear(): void;
  write(data: string | Buffer): void;
  kill(signal?: string): void;
  pause(): void;
  resume(): void;
}

/** How often a read of `process` may ask the daemon again (ms). */
export const PROCESS_REFRESH_MS = 250;
const RIS = "\x1bc";
// node-pty's unixTerminal leaves these out when the env is the app's own process.env.
const SANITIZED = ["TMUX", "TMUX_PANE", "STY", "WINDOW", "WINDOWID", "TERMCAP", "COLUMNS", "LINES"];

let sharedOptions: ClientOptions = {};
let shared: PtyDaemonClient | null = null;
let sharedUsers = 0;

/** Options of the shared client (socket path, autoStart, ...), for ptys spawned after this call. */
export function configure(options: ClientOptions): void {
  sharedOptions = options;
}

function acquireShared(): PtyDaemonClient {
  if (!shared || shared.closed) shared = createClient({ clientName: "@vibest/pty-daemon/node-pty", ...sharedOptions });
  sharedUsers++;
  return shared;
}

function releaseShared(client: PtyDaemonClient): void {
  if (client !== shared) return;
  if (--sharedUsers === 0) {
    shared = null;
    void client.close();
  }
}

class Emitter<T> {
  private fns: Array<(e: T) => unknown> = [];
  readonly event: IEvent<T> = (fn) => {
    this.fns.push(fn);
    return {
      dispose: () => {
        const i = this.fns.indexOf(fn);
        if (i >= 0) this.fns.splice(i, 1);
      },
    };
  };
  fire(e: T): void {
    for (const fn of [...this.fns]) {
      try {
        fn(e);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** The IPty of a daemon session (what spawn returns). */
export class DaemonPty implements IPty {
  pid = 0;
  cols: number;
  rows: number;
  handleFlowControl: boolean;
  /** The daemon session's id once created (null before). */
  sessionId: number | null = null;
  /** Resolves once the session exists (pid known); rejects when it could not be created. */
  readonly ready: Promise<void>;

  private readonly client: PtyDaemonClient;
  private readonly shared: boolean;
  private readonly binary: boolean;
  private readonly pauseStr: string;
  private readonly resumeStr: string;
  private readonly dataEmitter = new Emitter<string | Buffer>();
  private readonly exitEmitter = new Emitter<{ exitCode: number; signal?: number }>();
  private pending: Array<(id: number) => void> = [];
  private exited = false;
  private paused = false;
  /** While a resume's attach is in flight: live events held, so they follow the replay (or redraw) it brings. */
  private resuming: Array<() => void> | null = null;
  private nextOffset = 0;
  private processName: string;
  private processAsked = 0;
  private readonly listeners: Array<() => void> = [];

  constructor(file: string, args: string[] | string, opts: IPtyForkOptions) {
    if (opts.uid !== undefined || opts.gid !== undefined) {
      throw new Error("uid/gid are not supported: daemon sessions run as the daemon's user");
    }
    if (typeof args === "string") throw new Error("args as a string is not supported on unix."); // node-pty's words
    const argv = args ?? [];
    this.cols = opts.cols ?? 80;
    this.rows = opts.rows ?? 24;
    this.handleFlowControl = opts.handleFlowControl ?? false;
    this.pauseStr = opts.flowControlPause ?? "\x13";
    this.resumeStr = opts.flowControlResume ?? "\x11";
    const encoding = opts.encoding === undefined ? "utf8" : opts.encoding;
    if (encoding !== null && !/^utf-?8$/i.test(encoding)) throw new Error(`encoding ${encoding} is not supported (utf8 or null)`);
    this.binary = encoding === null;
    this.processName = file; // node-pty's fallback while the foreground program is unknown

    const cwd = opts.cwd ?? process.cwd();
    const source = opts.env ?? process.env;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(source)) if (v !== undefined) env[k] = v;
    if (source === process.env) for (const k of SANITIZED) delete env[k];
    env.TERM = opts.name || env.TERM || "xterm";

    this.shared = opts.client === undefined;
    this.client = opts.client ?? acquireShared();
    this.listen();
    this.ready = this.client
      .createSession({
        shell: file,
        args: argv,
        cwd,
        env,
        env_mode: "replace",
        cols: this.cols,
        rows: this.rows,
        attach: true,
        ...opts.session,
      })
      .then(
        (info) => {
          this.pid = info.pid;
          this.sessionId = info.id;
          this.flushEarly();
          for (const fn of this.pending.splice(0)) fn(info.id);
        },
        (err: unknown) => {
          this.pending = [];
          this.finish({ exitCode: 1 });
          throw err;
        },
      );
    this.ready.catch(() => {
      /* reported through onExit; awaiting ready still rejects */
    });
  }

  get process(): string {
    const id = this.sessionId;
    if (id !== null && !this.exited && Date.now() - this.processAsked >= PROCESS_REFRESH_MS) {
      this.processAsked = Date.now();
      this.client.listSessions().then(
        (list) => {
          const s = list.find((x) => x.id === id);
          if (s?.process) this.processName = s.process;
        },
        () => {
          /* keep the last value */
        },
      );
    }
    return this.processName;
  }

  get onData(): IEvent<string> {
    return this.dataEmitter.event as IEvent<string | Buffer> as IEvent<string>;
  }

  get onExit(): IEvent<{ exitCode: number; signal?: number }> {
    return this.exitEmitter.event;
  }

  on(event: "data", listener: (data: string) => void): void;
  on(event: "exit", listener: (exitCode: number, signal?: number) => void): void;
  on(event: "data" | "exit", listener: ((data: string) => void) | ((exitCode: number, signal?: number) => void)): void {
    if (event === "data") this.onData(listener as (data: string) => void);
    else this.onExit((e) => (listener as (c: number, s?: number) => void)(e.exitCode, e.signal));
  }

  write(data: string | Buffer): void {
    if (this.handleFlowControl) {
      // As node-pty: exactly the pause/resume string (not a part of a longer write) is taken as flow control.
      const s = typeof data === "string" ? data : data.toString("utf8");
      if (s === this.pauseStr) return this.pause();
      if (s === this.resumeStr) return this.resume();
    }
    const bytes = typeof data === "string" ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.whenCreated((id) => this.client.sendInput(id, bytes));
  }

  resize(columns: number, rows: number): void {
    if (!Number.isInteger(columns) || !Number.isInteger(rows) || columns < 1 || rows < 1) {
      throw new Error("resizing must be done using positive cols and rows"); // node-pty's message
    }
    this.cols = columns;
    this.rows = rows;
    this.whenCreated((id) => this.client.resize(id, columns, rows).catch(() => {}));
  }

  /** node-pty: a no-op except on Windows (ConPTY). */
  clear(): void {}

  kill(signal?: string): void {
    this.whenCreated((id) => {
      const p = signal === undefined ? this.client.kill(id) : this.client.signal(id, signal);
      p.catch(() => {
        /* already exited */
      });
    });
  }

  pause(): void {
    if (this.paused || this.exited) return;
    this.paused = true;
    this.whenCreated((id) => this.client.detachSession(id).catch(() => {}));
  }

  resume(): void {
    if (!this.paused || this.exited) return;
    this.paused = false;
    this.whenCreated((id) => {
      this.resuming = [];
      const flush = () => {
        const held = this.resuming ?? [];
        this.resuming = null;
        for (const fn of held) fn();
      };
      this.client.attachSession(id, { since: this.nextOffset }).then(
        (r) => {
          if (r.snapshot) this.emitData(RIS, r.snapshot.data);
          else if (r.replay && r.replay.length > 0) this.emitBytes(r.replay);
          this.nextOffset = r.offset;
          flush();
        },
        flush,
      );
    });
  }

  private whenCreated(fn: (id: number) => void): void {
    if (this.exited) return;
    if (this.sessionId !== null) fn(this.sessionId);
    else this.pending.push(fn);
  }

  private listen(): void {
    const c = this.client;
    // Until the create reply names our session, every session's events are held (output can come in the same read
    // as the reply, before the promise continuation runs), then ours are replayed and the rest dropped.
    let early: Array<() => void> | null = [];
    const mine = (s: number, replay: () => void) => {
      if (this.exited) return false;
      if (this.sessionId === null) {
        early?.push(() => {
          if (s === this.sessionId) replay();
        });
        return false;
      }
      return s === this.sessionId;
    };
    const onOutput = (ev: OutputEvent) => {
      const bytes = Uint8Array.from(ev.bytes); // a view into the read buffer: copied if held
      const deliver = () => {
        if (this.paused || this.exited) return;
        if (this.resuming) return void this.resuming.push(deliver);
        this.nextOffset = ev.offset + bytes.length;
        this.emitBytes(bytes);
      };
      if (mine(ev.session, deliver)) deliver();
    };
    const onResync = (ev: ResyncEvent) => {
      const deliver = () => {
        if (this.paused || this.exited) return;
        if (this.resuming) return void this.resuming.push(deliver);
        this.nextOffset = ev.snapshot.offset;
        this.emitData(RIS, ev.snapshot.data);
      };
      if (mine(ev.session, deliver)) deliver();
    };
    const onExit = (ev: ExitEvent) => {
      const deliver = () => {
        if (this.exited) return;
        if (this.resuming) return void this.resuming.push(deliver);
        // Remove the exited record (node-pty keeps nothing after exit); the shared client closes after it.
        const removal = c.kill(ev.session).catch(() => {});
        // node-pty on Unix: exitCode 0 and the signal number when killed by a signal.
        this.finish(ev.signal !== null ? { exitCode: ev.code ?? 0, signal: ev.signal } : { exitCode: ev.code ?? 0 }, removal);
      };
      if (mine(ev.session, deliver)) deliver();
    };
    const onClose = () => this.finish({ exitCode: 0, signal: 1 }); // the daemon is gone for good: a hangup
    // After a reconnect our session could not be re-attached (e.g. a restarted daemon): it is gone, a hangup too.
    const onReconnect = (ev: ReconnectEvent) => {
      if (ev.sessions.some((r) => r.session === this.sessionId && r.mode === "failed")) this.finish({ exitCode: 0, signal: 1 });
    };
    c.on("output", onOutput);
    c.on("resync", onResync);
    c.on("exit", onExit);
    c.on("close", onClose);
    c.on("reconnect", onReconnect);
    this.flushEarly = () => {
      const held = early ?? [];
      early = null;
      for (const fn of held) fn();
    };
    this.listeners.push(() => {
      early = null;
      c.off("output", onOutput);
      c.off("resync", onResync);
      c.off("exit", onExit);
      c.off("close", onClose);
      c.off("reconnect", onReconnect);
    });
  }

  private flushEarly: () => void = () => {};

  /** A redraw: RIS, then the snapshot (written into the reset terminal it rebuilds the screen). */
  private emitData(prefix: string, snapshot: Uint8Array | null): void {
    this.decoder = new TextDecoder(); // output continues at the snapshot's offset, on a character boundary
    const text = prefix + (snapshot ? new TextDecoder().decode(snapshot) : "");
    this.dataEmitter.fire(this.binary ? Buffer.from(text, "utf8") : text);
  }

  /** One streaming decoder for live output and replays alike, so a character split between them stays whole. */
  private decoder = new TextDecoder();
  private emitBytes(bytes: Uint8Array): void {
    if (this.binary) this.dataEmitter.fire(Buffer.from(bytes));
    else this.dataEmitter.fire(this.decoder.decode(bytes, { stream: true }));
  }

  private finish(e: { exitCode: number; signal?: number }, before: Promise<void> = Promise.resolve()): void {
    if (this.exited) return;
    this.exited = true;
    for (const off of this.listeners.splice(0)) off();
    this.exitEmitter.fire(e);
    if (this.shared) void before.then(() => releaseShared(this.client));
  }
}

/** node-pty's spawn: a new daemon session running `file` with `args`, as an IPty. */
export function spawn(file: string, args: string[] | string, options: IPtyForkOptions | IWindowsPtyForkOptions = {}): DaemonPty {
  return new DaemonPty(file, args, options);
}

export { PtyDaemonError };
