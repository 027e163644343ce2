// `npm run build:web`: the browser builds, with esbuild (bundling only; types are checked by tsc -p web).
//  - dist/browser/index.js: the SDK as one ES module for web apps (the same client, WebSocketTransport).
//  - ../../src/vibest_pty/web/static/: the page `vibest-pty web` serves (index.html, page.js, page.css with
//    xterm.js's CSS). Built here, never fetched from a CDN; the Python server only serves these files.
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const sdk = join(here, "..");
const staticDir = join(sdk, "..", "..", "src", "vibest_pty", "web", "static");

// The client module imports node builtins for its Node-only parts (the Unix socket transport, autoStart). In a
// browser those parts are never reached; these stubs keep the imports resolvable and fail loudly if one is called.
// A new node import in the SDK fails this build ("No matching export"): add its names here.
const NODE_STUBS = {
  "node:child_process": ["spawn"],
  "node:fs": ["mkdirSync", "openSync", "closeSync", "realpathSync", "statSync", "unlinkSync", "writeSync"],
  "node:net": ["createConnection"],
  "node:os": ["homedir"],
  "node:path": ["dirname", "join"],
};
const nodeStubs = {
  name: "node-stubs",
  setup(build) {
    build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "node-stub" }));
    build.onLoad({ filter: /.*/, namespace: "node-stub" }, (args) => {
      if (args.path === "node:util") return { contents: "export const TextDecoder = globalThis.TextDecoder;", loader: "js" };
      const names = NODE_STUBS[args.path];
      if (!names) return { errors: [{ text: `${args.path} has no browser stub (web/build.mjs NODE_STUBS)` }] };
      const body = names
        .map((n) => `export function ${n}() { throw new Error("${args.path} ${n}() is not available in a browser"); }`)
        .join("\n");
      return { contents: body, loader: "js" };
    });
  },
};

const common = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  plugins: [nodeStubs],
  logLevel: "warning",
  legalComments: "eof",
};

rmSync(staticDir, { recursive: true, force: true });
mkdirSync(staticDir, { recursive: true });
await Promise.all([
  esbuild.build({ ...common, entryPoints: [join(here, "sdk.ts")], outfile: join(sdk, "dist", "browser", "index.js") }),
  esbuild.build({
    ...common,
    entryPoints: [join(here, "page.ts")],
    outfile: join(staticDir, "page.js"),
    minify: true,
  }),
]);
copyFileSync(join(here, "index.html"), join(staticDir, "index.html"));
console.log(`build:web: ${staticDir} and dist/browser/index.js`);
