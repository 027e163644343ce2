// The browser entry of the SDK (dist/browser/index.js): the same client, to be given a WebSocketTransport.
export * from "../src/index.js";
