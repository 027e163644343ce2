import * as net from "node:net";

import type { Transport, TransportSocket } from "./transport.js";

/** The daemon's Unix socket (the default transport of PtyDaemonClient in Node/Electron). */
export class UnixSocketTransport implements Transport {
  constructor(readonly path: string) {}

  get description(): string {
    return this.path;
  }

  connect(): TransportSocket {
    return net.createConnection(this.path);
  }
}
