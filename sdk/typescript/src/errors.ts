/** Error codes of the protocol (docs/protocol.md), plus the SDK's own for connection problems. */
export type ProtocolErrorCode =
  | "bad_frame"
  | "bad_message"
  | "unknown_type"
  | "invalid_argument"
  | "session_not_found"
  | "session_exited"
  | "input_queue_full"
  | "limit_reached"
  | "spawn_failed"
  | "unsupported_protocol"
  | "unauthorized"
  | "internal"
  | "read_only"
  | "busy"
  | "timeout"
  | "no_shell_integration"
  | "upgrade_failed"
  | "upgrade_in_progress";

/**
 * SDK codes: `connection_lost` (the request was sent but the connection dropped before its reply: it may or may not
 * have been applied), `closed` (the client is closed), `timeout` (waitForConnection gave up),
 * `untrusted_server` (the socket or its directory may belong to another user: see trust.ts),
 * `daemon_restarted` (a reconnect reached another daemon instance: the session is gone, not re-attached by id).
 */
export type ClientErrorCode =
  | "connection_lost"
  | "closed"
  | "timeout"
  | "untrusted_server"
  | "daemon_restarted";

export type ErrorCode = ProtocolErrorCode | ClientErrorCode | (string & {});

/** An `error` reply or event from the daemon, or a connection failure. `code` is the protocol's error code. */
export class PtyDaemonError extends Error {
  readonly code: ErrorCode;
  /** The request type that failed, when known. */
  readonly request: string | undefined;
  /** The session the failed request named, when any. */
  readonly session: number | undefined;
  /** The daemon's raw error message map, when the error came from the daemon. */
  readonly reply: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    extra: { request?: string; session?: number; reply?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(`${code}: ${message}`, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "PtyDaemonError";
    this.code = code;
    this.request = extra.request;
    this.session = extra.session;
    this.reply = extra.reply;
  }

  /** Build from a daemon `error` map. */
  static fromReply(msg: Record<string, unknown>): PtyDaemonError {
    const code = typeof msg.code === "string" ? msg.code : "internal";
    const message = typeof msg.message === "string" ? msg.message : "";
    return new PtyDaemonError(code, message, {
      request: typeof msg.request === "string" ? msg.request : undefined,
      session: typeof msg.session === "number" ? msg.session : undefined,
      reply: msg,
    });
  }
}
