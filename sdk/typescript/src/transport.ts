/**
 * How a PtyDaemonClient reaches the daemon. The client needs a byte stream carrying protocol frames (docs/protocol.md)
 * and sees it through the small part of node's net.Socket API it uses, so a net.Socket is a TransportSocket as is.
 *
 * - UnixSocketTransport (transport-node.ts): the daemon's Unix socket, the default in Node/Electron.
 * - WebSocketTransport (transport-websocket.ts): `vibest-pty web` relaying one frame per binary WebSocket message,
 *   for browsers.
 */

/** One connection. Events: "connect" (usable), "data" (Uint8Array chunks of the frame stream), "error", "close". */
export interface TransportSocket {
  // The listener types are net.Socket's (its overloads end in a (...args: any[]) => void catch-all).
  on(event: string, listener: (...args: any[]) => void): unknown;
  once(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  /** The client writes exactly one whole frame per call. */
  write(frame: Uint8Array): unknown;
  /** Close now; "close" follows (asynchronously). */
  destroy(): unknown;
  readonly destroyed: boolean;
  /** True once "close" has been emitted. */
  readonly closed: boolean;
  setNoDelay?(noDelay?: boolean): unknown;
}

export interface Transport {
  /** Where it connects, for messages (the socket path, the WebSocket URL). */
  readonly description: string;
  /** Start one connection attempt. */
  connect(): TransportSocket;
}
