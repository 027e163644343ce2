// An SDK client attached across an in-place upgrade (tests/test_upgrade.py): attaches to session ARGV[3] with
// since 0, collects its output until the exit, and prints one JSON line: what it saw (a hash of the bytes, offset
// gaps, the upgraded events, disconnects, the exit code).
import { createHash } from "node:crypto";

const [, , socketPath, sidText, distIndex] = process.argv;
const { createClient } = await import(distIndex);
const sid = Number(sidText);
const c = createClient({ socketPath });
await c.waitForConnection();
const hash = createHash("sha256");
let next = 0;
let length = 0;
let gaps = 0;
const upgraded = [];
let disconnects = 0;
c.on("upgraded", (ev) => upgraded.push(ev));
c.on("disconnect", () => disconnects++);
const exit = new Promise((resolve) => {
  c.on("exit", (ev) => { if (ev.session === sid) resolve(ev); });
});
c.on("output", (ev) => {
  if (ev.session !== sid) return;
  if (ev.offset !== next) gaps++;
  next = ev.offset + ev.bytes.length;
  length += ev.bytes.length;
  hash.update(ev.bytes);
});
const r = await c.attachSession(sid, { since: 0 });
process.stdout.write("attached\n");
const ev = await exit;
console.log(JSON.stringify({ attached_at: r.offset, length, gaps, sha256: hash.digest("hex"), upgraded, disconnects,
  code: ev.code }));
await c.close();
