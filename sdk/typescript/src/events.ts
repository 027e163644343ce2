import type { PtyDaemonError } from "./errors.js";
import type { HelloInfo, SessionInfo, Snapshot } from "./types.js";

/** Output of an attached session. */
export interface OutputEvent {
  session: number;
  /**
   * The bytes decoded as UTF-8 by one streaming TextDecoder per session: a character split across chunks is
   * completed by the next chunk, never mangled. Reset by a fresh attach and by a resync.
   */
  data: string;
  /** The raw bytes (a view: copy them if you keep them beyond the listener). */
  bytes: Uint8Array;
  /** The session's output offset of bytes[0]. Consecutive events of a session are contiguous. */
  offset: number;
}

export interface ExitEvent {
  session: number;
  /** Exit status, or null when killed by a signal. */
  code: number | null;
  /** Terminating signal, or null. */
  signal: number | null;
}

export interface BackpressureWarningEvent {
  session: number;
  /** Queued events for this client and session in the daemon. */
  queue_size: number;
  level: "yellow" | "red";
}

export interface ResyncEvent {
  session: number;
  /**
   * Render this snapshot into a fresh terminal: output continues from snapshot.offset. The session's text decoder
   * is reset.
   */
  snapshot: Snapshot;
  /**
   * `backpressure`: sent by the daemon, which discarded this client's backlog: its queue was full, or the session's
   * emulator process was restarted (the terminal state was rebuilt from the replay window).
   * `reconnect`: after a reconnect the missed output was older than the daemon's replay window.
   */
  reason: "backpressure" | "reconnect";
}

export interface ShutdownEvent {
  reason: string;
}

/** The daemon replaced its code in place (docs/upgrade.md): same pid and instance, sessions and connection kept. */
export interface UpgradedEvent {
  version: string;
  previous_version: string;
}

export interface CloseEvent {
  /** Why the client closed for good: close() was called, reconnecting gave up, or a protocol error. */
  reason: string;
  error?: PtyDaemonError;
}

export interface DisconnectEvent {
  /** The connection dropped; the client reconnects unless reconnect is disabled (then `close` follows). */
  reason: string;
}

export interface ReattachResult {
  session: number;
  /** The offset the client asked to resume from (the next byte it expected). */
  since: number;
  /**
   * `replay`: the missed bytes were emitted as ordinary `output` events (offset `since`), nothing lost or duplicated.
   * `snapshot`: they were too old for the replay window; a `resync` event (reason "reconnect") was emitted.
   * `failed`: the attach failed (e.g. session_not_found after a daemon restart); an `error` event was emitted.
   */
  mode: "replay" | "snapshot" | "failed";
  /** Live output continues from this offset. */
  offset?: number;
  replayedBytes?: number;
  error?: PtyDaemonError;
}

export interface ReconnectEvent {
  /** Connection attempts it took. */
  attempts: number;
  /** Milliseconds between the drop and the re-established connection. */
  downtimeMs: number;
  hello: HelloInfo;
  /** One entry per session that was attached when the connection dropped. */
  sessions: ReattachResult[];
}

/** Shell integration: a command started or ended, in stream order with `output` (and ends of every session to watchers). */
export interface CommandEvent {
  session: number;
  phase: "start" | "end";
  seq: number;
  offset: number;
  command?: string;
  exit_code?: number;
  cwd?: string;
}

export interface SessionCreatedEvent {
  session: number;
  info: SessionInfo;
}

export interface SessionExitedEvent {
  session: number;
  code: number | null;
  signal: number | null;
}

export interface SessionRemovedEvent {
  session: number;
}

export interface ClientEvents {
  output: OutputEvent;
  exit: ExitEvent;
  command: CommandEvent;
  session_created: SessionCreatedEvent;
  session_exited: SessionExitedEvent;
  session_removed: SessionRemovedEvent;
  backpressure_warning: BackpressureWarningEvent;
  resync: ResyncEvent;
  shutdown: ShutdownEvent;
  upgraded: UpgradedEvent;
  /** Errors not tied to a pending request: failed fire-and-forget input, failed re-attach, protocol errors. */
  error: PtyDaemonError;
  close: CloseEvent;
  disconnect: DisconnectEvent;
  reconnect: ReconnectEvent;
}

export type EventName = keyof ClientEvents;
export type Listener<K extends EventName> = (event: ClientEvents[K]) => void;

/**
 * A small typed emitter. Unlike node's EventEmitter an `error` event without listeners is dropped, not thrown.
 * A throwing listener does not disturb the client: the exception is re-thrown asynchronously.
 */
export class TypedEmitter {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private listeners = new Map<EventName, Array<(ev: any) => void>>();

  on<K extends EventName>(event: K, fn: Listener<K>): this {
    let list = this.listeners.get(event);
    if (!list) this.listeners.set(event, (list = []));
    list.push(fn);
    return this;
  }

  once<K extends EventName>(event: K, fn: Listener<K>): this {
    const wrapper: Listener<K> = (ev) => {
      this.off(event, wrapper);
      fn(ev);
    };
    return this.on(event, wrapper);
  }

  off<K extends EventName>(event: K, fn: Listener<K>): this {
    const list = this.listeners.get(event);
    if (list) {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  listenerCount(event: EventName): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  protected emit<K extends EventName>(event: K, ev: ClientEvents[K]): void {
    const list = this.listeners.get(event);
    if (!list || list.length === 0) return;
    for (const fn of [...list]) {
      try {
        fn(ev);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
