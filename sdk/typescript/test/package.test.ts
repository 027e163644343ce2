/**
 * The package as an app gets it: `npm pack` of a fresh copy of sdk/typescript (no dist/: prepack must build it),
 * installed into a new project and used from ES modules, from CommonJS `require`, and from TypeScript compiled as
 * CommonJS (`module: node16`) and as ESM, each against a real daemon. Also: every source map in the tarball
 * resolves to a file in the tarball.
 *
 * Offline: the consumer project installs the SDK tarball next to a tarball of @msgpack/msgpack packed from our own
 * node_modules, so npm has every dependency at hand and never asks a registry (`--offline`).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { Daemon, ROOT } from "./helpers.js";

const SDK = join(ROOT, "sdk", "typescript");
const TSC = join(SDK, "node_modules", "typescript", "bin", "tsc");
const NPM_TIMEOUT = 120_000; // ms; npm pack + install take ~3 s here, the box is shared

let work: string;
let consumer: string;
let daemon: Daemon;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return execFileSync(cmd, args, { cwd, env, encoding: "utf8", timeout: NPM_TIMEOUT, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed in ${cwd}: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

function npm(args: string[], cwd: string): string {
  // npm_config_* of the enclosing `npm test` (e.g. its cwd-bound prefix) must not leak into these npm runs.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith("npm_")));
  return run("npm", [...args, "--no-audit", "--no-fund", "--loglevel=error"], cwd, env);
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), "vpts-pack-"));
  // A fresh clone's sdk/typescript: tracked and untracked-but-not-ignored files (so no dist/, no build-test/).
  const fresh = join(work, "sdk");
  const files = run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], SDK).split("\0");
  for (const rel of files) {
    if (!rel || !existsSync(join(SDK, rel))) continue;
    mkdirSync(dirname(join(fresh, rel)), { recursive: true });
    copyFileSync(join(SDK, rel), join(fresh, rel));
  }
  assert.ok(!existsSync(join(fresh, "dist")));
  symlinkSync(join(SDK, "node_modules"), join(fresh, "node_modules"));
  const tarballs = join(work, "tarballs");
  mkdirSync(tarballs);
  npm(["pack", "--pack-destination", tarballs], fresh);
  npm(["pack", "--ignore-scripts", "--pack-destination", tarballs, join(SDK, "node_modules", "@msgpack", "msgpack")], SDK);
  const names = readdirSync(tarballs);
  const sdkTgz = names.find((n) => n.startsWith("vibest-pty-daemon-"));
  const msgpackTgz = names.find((n) => n.startsWith("msgpack-msgpack-"));
  assert.ok(sdkTgz && msgpackTgz, `tarballs: ${names.join(", ")}`);

  consumer = join(work, "app");
  mkdirSync(consumer);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true }));
  npm(["install", "--offline", join(tarballs, msgpackTgz), join(tarballs, sdkTgz)], consumer);
  daemon = await Daemon.start();
});

after(async () => {
  await daemon?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A consumer program: create a session printing a marker, read it back through the SDK, print the marker. */
function program(importLine: string, marker: string): string {
  return `${importLine}
const main = async () => {
  const client = createClient({ socketPath: process.env.SOCK, reconnect: false });
  await client.waitForConnection();
  let text = "";
  const done = new Promise((resolve) => {
    client.on("output", (ev) => { text += ev.data; if (text.includes("${marker}-42")) resolve(undefined); });
  });
  const info = await client.createSession({ shell: "/bin/sh", args: ["-c", "echo ${marker}-$((6*7)); sleep 30"], attach: true });
  await done;
  await client.kill(info.id);
  await client.close();
  console.log("ok ${marker}-42");
};
main().catch((err) => { console.error(err); process.exit(1); });
`;
}

function runConsumer(file: string): string {
  return run(process.execPath, [file], consumer, { ...process.env, SOCK: daemon.socket });
}

test("the tarball holds both builds, their types and a built node-pty entry", () => {
  const pkg = join(consumer, "node_modules", "@vibest", "pty-daemon");
  for (const f of ["dist/index.js", "dist/index.d.ts", "dist/cjs/index.js", "dist/cjs/index.d.ts", "dist/cjs/package.json", "README.md"]) {
    assert.ok(existsSync(join(pkg, f)), `${f} is missing from the package`);
  }
  assert.equal(JSON.parse(readFileSync(join(pkg, "dist", "cjs", "package.json"), "utf8")).type, "commonjs");
});

test("every source map in the tarball resolves to a file in the tarball", () => {
  const pkg = join(consumer, "node_modules", "@vibest", "pty-daemon");
  const maps = walk(pkg).filter((f) => f.endsWith(".map"));
  assert.ok(maps.length > 0);
  for (const m of maps) {
    const map = JSON.parse(readFileSync(m, "utf8")) as { sources: string[]; sourceRoot?: string };
    for (const s of map.sources) {
      const target = resolve(dirname(m), map.sourceRoot ?? "", s);
      assert.ok(target.startsWith(pkg) && existsSync(target), `${m}: source ${s} does not resolve (${target})`);
    }
  }
});

test("the node-pty entry loads from ES modules and from require()", () => {
  writeFileSync(join(consumer, "np.mjs"), `import { spawn } from "@vibest/pty-daemon/node-pty"; console.log(typeof spawn);`);
  writeFileSync(join(consumer, "np.cjs"), `console.log(typeof require("@vibest/pty-daemon/node-pty").spawn);`);
  assert.equal(runConsumer("np.mjs").trim(), "function");
  assert.equal(runConsumer("np.cjs").trim(), "function");
});

test("an ES module consumer imports the package and talks to the daemon", () => {
  writeFileSync(join(consumer, "esm.mjs"), program(`import { createClient } from "@vibest/pty-daemon";`, "from-esm"));
  assert.match(runConsumer("esm.mjs"), /ok from-esm-42/);
});

test("a CommonJS consumer requires the package and talks to the daemon", () => {
  writeFileSync(join(consumer, "cjs.cjs"), program(`const { createClient } = require("@vibest/pty-daemon");`, "from-cjs"));
  assert.match(runConsumer("cjs.cjs"), /ok from-cjs-42/);
});

test("TypeScript consumers type-check and run as CommonJS (module node16) and as ESM", () => {
  const ts = join(consumer, "ts");
  mkdirSync(join(ts, "src"), { recursive: true });
  // A CommonJS project (no "type": "module"): .ts compiles to require(); .mts stays ESM.
  writeFileSync(join(ts, "package.json"), JSON.stringify({ name: "ts-app", private: true }));
  writeFileSync(
    join(ts, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        module: "node16",
        moduleResolution: "node16",
        target: "ES2022",
        strict: true,
        outDir: "out",
        rootDir: "src",
        types: ["node"],
        typeRoots: [join(SDK, "node_modules", "@types")],
      },
      include: ["src"],
    }),
  );
  const typed = (importLine: string, marker: string) =>
    program(importLine, marker)
      .replace("let text = \"\";", "let text: string = \"\";\n  const info0: SessionInfo | null = null; void info0;")
      .replace("(ev) =>", "(ev: OutputEvent) =>")
      .replace("(err) =>", "(err: unknown) =>");
  const nodePty = `import { spawn, type IPty } from "@vibest/pty-daemon/node-pty";
const spawnTyped: (file: string, args: string[], options: { cols?: number }) => IPty = spawn;
void spawnTyped;
`;
  writeFileSync(
    join(ts, "src", "cjs.ts"),
    nodePty + typed(`import { createClient, type OutputEvent, type SessionInfo } from "@vibest/pty-daemon";`, "from-ts-cjs"),
  );
  writeFileSync(
    join(ts, "src", "esm.mts"),
    nodePty + typed(`import { createClient, type OutputEvent, type SessionInfo } from "@vibest/pty-daemon";`, "from-ts-esm"),
  );
  run(process.execPath, [TSC, "-p", join(ts, "tsconfig.json")], ts);
  const cjs = readFileSync(join(ts, "out", "cjs.js"), "utf8");
  assert.match(cjs, /require\("@vibest\/pty-daemon"\)/);
  assert.match(runConsumer(join(ts, "out", "cjs.js")), /ok from-ts-cjs-42/);
  assert.match(runConsumer(join(ts, "out", "esm.mjs")), /ok from-ts-esm-42/);
});
