/**
 * Per-session handles: one object per daemon session with its own typed events and methods, so a consumer does not
 * filter the client's events by session id. A handle is a cheap view over a PtyDaemonClient (no state of its own
 * but the listeners it registered): `client.session(id)` may be called any number of times.
 */
import type { PtyDaemonClient } from "./client.js";
import { PtyDaemonError } from "./errors.js";
import type { ClientEvents, EventName, OutputEvent } from "./events.js";
import type { AttachOptions, AttachResult, SessionInfo, SignalSpec, Snapshot } from "./types.js";

/** Something to stop: a listener registration (node-pty's and VS Code's IDisposable). */
export interface IDisposable {
  dispose(): void;
}

/** The client events that name a session (they carry a `session` field). */
export type SessionEventName = {
  [K in EventName]: ClientEvents[K] extends { session: number } ? K : never;
}[EventName];

export class SessionHandle {
  constructor(
    readonly client: PtyDaemonClient,
    readonly id: number,
  ) {}

  /** Listen to one of the client's session events, for this session only. */
  on<K extends SessionEventName>(event: K, fn: (ev: ClientEvents[K]) => void): IDisposable {
    const listener = (ev: ClientEvents[K]) => {
      if ((ev as { session: number }).session === this.id) fn(ev);
    };
    this.client.on(event, listener);
    let disposed = false;
    return {
      dispose: () => {
        if (disposed) return;
        disposed = true;
        this.client.off(event, listener);
      },
    };
  }

  /** Output as text (one streaming UTF-8 decoder per session); `ev` has the raw bytes and the offset. */
  onData(fn: (data: string, ev: OutputEvent) => void): IDisposable {
    return this.on("output", (ev) => fn(ev.data, ev));
  }

  /** The session's program ended (after its last output). */
  onExit(fn: (ev: ClientEvents["exit"]) => void): IDisposable {
    return this.on("exit", fn);
  }

  /** Redraw from `ev.snapshot` (into a fresh terminal): output was discarded (backpressure) or is too old to replay. */
  onResync(fn: (ev: ClientEvents["resync"]) => void): IDisposable {
    return this.on("resync", fn);
  }

  onBackpressureWarning(fn: (ev: ClientEvents["backpressure_warning"]) => void): IDisposable {
    return this.on("backpressure_warning", fn);
  }

  /** Errors of this session's fire-and-forget requests (e.g. write to an exited session). */
  onError(fn: (err: ClientEvents["error"]) => void): IDisposable {
    const listener = (err: ClientEvents["error"]) => {
      if (err.session === this.id) fn(err);
    };
    this.client.on("error", listener);
    return { dispose: () => void this.client.off("error", listener) };
  }

  /** Subscribe to the output (see PtyDaemonClient.attachSession). */
  attach(options: AttachOptions = {}): Promise<AttachResult> {
    return this.client.attachSession(this.id, options);
  }

  detach(): Promise<void> {
    return this.client.detachSession(this.id);
  }

  /** Type into the terminal, fire-and-forget: failures arrive through onError. */
  write(data: string | Uint8Array): void {
    this.client.sendInput(this.id, data);
  }

  /** Like write, but resolves once the daemon accepted the input. */
  input(data: string | Uint8Array): Promise<void> {
    return this.client.input(this.id, data);
  }

  resize(cols: number, rows: number): Promise<void> {
    return this.client.resize(this.id, cols, rows);
  }

  /** SIGHUP, then SIGKILL after the daemon's grace; on an exited session: remove its record. */
  kill(): Promise<void> {
    return this.client.kill(this.id);
  }

  signal(signal: SignalSpec): Promise<void> {
    return this.client.signal(this.id, signal);
  }

  snapshot(): Promise<Snapshot> {
    return this.client.getSnapshot(this.id);
  }

  /** The session's current SessionInfo (rejects with session_not_found when it is gone). */
  async info(): Promise<SessionInfo> {
    const found = (await this.client.listSessions()).find((s) => s.id === this.id);
    if (!found) throw new PtyDaemonError("session_not_found", `no session ${this.id}`, { session: this.id });
    return found;
  }
}

/**
 * What createSession resolves with: a handle that also carries the SessionInfo fields of the create reply (as they
 * were then: `await session.info()` for current values).
 */
export type CreatedSession = SessionHandle & SessionInfo;
