export { createClient, defaultSocketPath, PtyDaemonClient, PROTOCOL_VERSION, SDK_VERSION } from "./client.js";
export type { AutoStartOptions, ClientOptions, ReconnectOptions, WaitOptions } from "./client.js";
export { PtyDaemonError } from "./errors.js";
export type { Transport, TransportSocket } from "./transport.js";
export { UnixSocketTransport } from "./transport-node.js";
export { WebSocketTransport, WS_CLOSE_NO_DAEMON, WS_CLOSE_UNAUTHORIZED } from "./transport-websocket.js";
export type { WebSocketCloseInfo, WebSocketLike, WebSocketTransportOptions } from "./transport-websocket.js";
export { colorsFromTheme } from "./theme.js";
export type { XtermTheme } from "./theme.js";
export type { ClientErrorCode, ErrorCode, ProtocolErrorCode } from "./errors.js";
export type {
  BackpressureWarningEvent,
  ClientEvents,
  CloseEvent,
  CommandEvent,
  DisconnectEvent,
  EventName,
  ExitEvent,
  Listener,
  OutputEvent,
  ReattachResult,
  ReconnectEvent,
  ResyncEvent,
  SessionCreatedEvent,
  SessionExitedEvent,
  SessionRemovedEvent,
  ShutdownEvent,
  UpgradedEvent,
} from "./events.js";
export {
  DEFAULT_MAX_FRAME,
  encodeFrame,
  FrameDecoder,
  FrameError,
  isMalformed,
  Malformed,
  pack,
  unpackPayload,
} from "./codec.js";
export type { Message } from "./codec.js";
export type * from "./types.js";
export { SessionHandle } from "./session.js";
export type { CreatedSession, IDisposable, SessionEventName } from "./session.js";
export { checkSocketTrust } from "./trust.js";
