// Measures @msgpack/msgpack against msgpackr on the SDK's hot path: `output` frames of 4 KiB and 64 KiB
// (decode: what the client does per chunk; encode: for completeness) and checks both against the shared
// protocol vectors (tests/vectors/frames.json), since the protocol requires byte-exact encoding.
// Run: npm run bench   (msgpackr is a devDependency only for this script)
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import * as mp from "@msgpack/msgpack";
import { Packr, Unpackr } from "msgpackr";

const here = dirname(fileURLToPath(import.meta.url));
const vectors = JSON.parse(readFileSync(join(here, "../../../tests/vectors/frames.json"), "utf8"));

const mpEncoder = new mp.Encoder();
const mpDecoder = new mp.Decoder();
const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

const libs = {
  "@msgpack/msgpack": { encode: (v) => mpEncoder.encode(v), decode: (b) => mpDecoder.decode(b) },
  msgpackr: { encode: (v) => packr.pack(v), decode: (b) => unpackr.unpack(b) },
};

function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {
    if (typeof v.$bin === "string") return Uint8Array.from(Buffer.from(v.$bin, "hex"));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }
  return v;
}

console.log("vector conformance (encode byte for byte):");
for (const [name, lib] of Object.entries(libs)) {
  const bad = [];
  for (const f of vectors.frames) {
    const want = f.hex.slice(8);
    const got = Buffer.from(lib.encode(revive(f.value))).toString("hex");
    if (got !== want) bad.push(f.name);
  }
  console.log(`  ${name.padEnd(18)} ${vectors.frames.length - bad.length}/${vectors.frames.length}` +
    (bad.length ? `  mismatches: ${bad.join(", ")}` : ""));
}

function bench(label, fn, minMs = 400) {
  for (let i = 0; i < 200; i++) fn(); // warm-up
  let n = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < minMs) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  return (n / elapsed) * 1000;
}

console.log("\nthroughput (frames/s, higher is better; MiB/s of payload in brackets):");
for (const size of [4096, 65536]) {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + 7) & 0xff;
  const msg = { type: "output", session: 7, data, offset: 123456789 };
  const frame = mpEncoder.encode(msg);
  for (const [name, lib] of Object.entries(libs)) {
    const enc = bench("enc", () => lib.encode(msg));
    const dec = bench("dec", () => lib.decode(frame));
    const mib = (r) => ((r * size) / 1048576).toFixed(0);
    console.log(`  ${String(size / 1024).padStart(2)} KiB ${name.padEnd(18)} encode ${enc.toFixed(0).padStart(8)} (${mib(enc)} MiB/s)` +
      `   decode ${dec.toFixed(0).padStart(8)} (${mib(dec)} MiB/s)`);
  }
}
