/**
 * The browser transport: a WebSocket to `vibest-pty web` (src/vibest_pty/web/), which relays the daemon's protocol
 * with one whole frame (u32 length + MessagePack map) per binary message, both ways.
 *
 * The handshake (docs/web.md): the server accepts the WebSocket only from its own Origin; the first message is text,
 * `{"token": "..."}`; the server answers `{"ok": true}` once it is connected to the daemon, and only then relays
 * frames. Refusals are close codes: 4401 (no or wrong token), 4502 (no daemon, or the daemon connection ended).
 */
import type { Transport, TransportSocket } from "./transport.js";

/** Close codes the server uses (4000-4999 are the application's range in RFC 6455). */
export const WS_CLOSE_UNAUTHORIZED = 4401;
export const WS_CLOSE_NO_DAEMON = 4502;

/** The part of the WHATWG WebSocket this transport uses (browsers; Node 22+ has it as a global too). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array | string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface WebSocketCloseInfo {
  code: number;
  reason: string;
  /** True when the server had accepted the token (the connection had been usable). */
  authenticated: boolean;
}

export interface WebSocketTransportOptions {
  /** e.g. `ws://127.0.0.1:7681/ws` (wss:// when the server has TLS). */
  url: string;
  /** The token `vibest-pty web` printed (it travels in the first message, never in the URL). */
  token: string;
  /** Default: `new globalThis.WebSocket(url)`. */
  createWebSocket?: (url: string) => WebSocketLike;
  /** Called whenever a WebSocket of this transport closes, with the server's code and reason. */
  onClose?: (info: WebSocketCloseInfo) => void;
}

type Listener = (...args: unknown[]) => void;

function defaultWebSocket(url: string): WebSocketLike {
  const WS = (globalThis as unknown as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
  if (!WS) throw new Error("no WebSocket in this environment: pass createWebSocket");
  return new WS(url);
}

class WebSocketConnection implements TransportSocket {
  destroyed = false;
  closed = false;
  private authenticated = false;
  private readonly listeners = new Map<string, Listener[]>();
  private readonly ws: WebSocketLike;

  constructor(private readonly opts: WebSocketTransportOptions) {
    const ws = (opts.createWebSocket ?? defaultWebSocket)(opts.url);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ token: opts.token }));
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onerror = () => {
      /* onclose follows with the code */
    };
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
  }

  private onMessage(data: unknown): void {
    if (this.destroyed) return;
    if (typeof data === "string") {
      // Before the token is accepted the server speaks JSON text; after it, only binary frames.
      if (!this.authenticated) {
        let ok = false;
        try {
          ok = (JSON.parse(data) as { ok?: unknown }).ok === true;
        } catch {
          /* not ours */
        }
        if (ok) {
          this.authenticated = true;
          this.emit("connect");
          return;
        }
      }
      this.fail(new Error(`unexpected text message from ${this.opts.url}`));
      return;
    }
    if (!this.authenticated) {
      this.fail(new Error(`a frame from ${this.opts.url} before the handshake`));
      return;
    }
    if (data instanceof ArrayBuffer) this.emit("data", new Uint8Array(data));
    else if (ArrayBuffer.isView(data)) this.emit("data", new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  private fail(err: Error): void {
    this.emit("error", err);
    this.destroy();
  }

  private onClose(code: number, reason: string): void {
    const info = { code, reason, authenticated: this.authenticated };
    this.opts.onClose?.(info);
    if (!this.authenticated && !this.destroyed) {
      const why = reason || (code === 1006 ? "refused or unreachable" : `code ${code}`);
      this.emit("error", Object.assign(new Error(`WebSocket ${this.opts.url}: ${why}`), info));
    }
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.destroyed = true;
    this.closed = true;
    this.emit("close");
  }

  on(event: string, listener: Listener): this {
    const list = this.listeners.get(event) ?? [];
    list.push(listener);
    this.listeners.set(event, list);
    return this;
  }

  once(event: string, listener: Listener): this {
    const wrapped: Listener = (...args) => {
      this.off(event, wrapped);
      listener(...args);
    };
    (wrapped as { original?: Listener }).original = listener;
    return this.on(event, wrapped);
  }

  off(event: string, listener: Listener): this {
    const list = this.listeners.get(event);
    if (list) {
      const i = list.findIndex((l) => l === listener || (l as { original?: Listener }).original === listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  private emit(event: string, ...args: unknown[]): void {
    for (const l of [...(this.listeners.get(event) ?? [])]) l(...args);
  }

  write(frame: Uint8Array): boolean {
    if (this.destroyed) return false;
    this.ws.send(frame);
    return true;
  }

  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    try {
      this.ws.close(1000, "closed by the client");
    } catch {
      /* already closing */
    }
    // Like net.Socket, "close" comes after destroy() returns; the WebSocket's own close is not waited for.
    setTimeout(() => this.finish(), 0);
    return this;
  }
}

/** Connects through `vibest-pty web`. Pass it as ClientOptions.transport. */
export class WebSocketTransport implements Transport {
  constructor(private readonly opts: WebSocketTransportOptions) {}

  get description(): string {
    return this.opts.url;
  }

  connect(): TransportSocket {
    return new WebSocketConnection(this.opts);
  }
}
