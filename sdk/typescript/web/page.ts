/**
 * The page `vibest-pty web` serves: xterm.js on the SDK's PtyDaemonClient over a WebSocketTransport.
 *
 * The address is `http://HOST:PORT/#token=T[&session=ID]`: the token stays in the fragment (never sent in an HTTP
 * request, so never in a server or proxy log) and goes to the server in the WebSocket's first message. The attached
 * session is kept in the fragment too, so a reload re-attaches it and paints its snapshot.
 */
import "@xterm/xterm/css/xterm.css";
import "./page.css";

import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";

import { PtyDaemonClient, type ReconnectEvent, type SessionInfo, type Snapshot } from "../src/index.js";
import {
  WS_CLOSE_NO_DAEMON,
  WS_CLOSE_UNAUTHORIZED,
  WebSocketTransport,
  type WebSocketCloseInfo,
} from "../src/transport-websocket.js";

// Output bytes handed to xterm.js and not yet parsed. Past this the page stops feeding it, lets it catch up and
// repaints from a fresh snapshot: a flood (`yes`) then costs the page a bounded backlog (~1 MiB: 20-100 ms of
// parsing in a loaded headless Chromium) instead of an ever-growing one that freezes it.
const XTERM_BACKLOG_MAX = 1024 * 1024;
// Output kept while a snapshot is being fetched or painted (older chunks are covered by the snapshot anyway).
const HELD_OUTPUT_MAX = 4 * 1024 * 1024;
// The protocol has no "session created" event, so the list is polled (one small `list` request).
const LIST_POLL_MS = 2000;
const RESIZE_DEBOUNCE_MS = 50;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;

const params = new URLSearchParams(location.hash.slice(1));
const token = params.get("token") ?? "";

const statusEl = $<HTMLDivElement>("status");
function setStatus(text: string | null, kind: "info" | "warn" | "error" = "info"): void {
  statusEl.hidden = text === null;
  statusEl.textContent = text ?? "";
  statusEl.className = kind;
}

const term = new Terminal({
  allowProposedApi: false,
  cursorBlink: true,
  scrollback: 5000,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace',
  fontSize: 14,
  theme: { background: "#1e1e1e" },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.open($("terminal"));

let closedForGood = false;
let lastClose: WebSocketCloseInfo | null = null;
let lastReconnect: ReconnectEvent | null = null;

function onTransportClose(info: WebSocketCloseInfo): void {
  lastClose = info;
  if (closedForGood) return;
  if (info.code === WS_CLOSE_UNAUTHORIZED) {
    closedForGood = true;
    setStatus(
      "Refused: the token is missing or wrong. Open the address `vibest-pty web` printed (it ends in #token=…).",
      "error",
    );
    void client.close();
  } else if (info.code === WS_CLOSE_NO_DAEMON) {
    setStatus(
      `The vibest-pty daemon is not reachable (${info.reason || "no daemon"}). ` +
        "Start it with `vibest-pty-daemon`; this page reconnects by itself.",
      "error",
    );
  } else if (!info.authenticated) {
    setStatus(`Cannot reach the web server at ${location.host}: reconnecting…`, "warn");
  }
}

const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const client = new PtyDaemonClient({
  transport: new WebSocketTransport({ url: wsUrl, token, onClose: onTransportClose }),
  clientName: "vibest-pty web page",
  // Keep trying for a day: the page is the user's window onto the daemon, it should come back by itself.
  reconnect: { initialDelayMs: 200, maxDelayMs: 2000, giveUpAfterMs: 24 * 3600 * 1000 },
});

// -- the attached session and its screen ------------------------------------------------------------------------

type Mode = "none" | "live" | "draining" | "attaching" | "painting";
interface Held {
  offset: number;
  bytes: Uint8Array;
}

let current: number | null = null;
let mode: Mode = "none";
let held: Held[] = [];
let heldBytes = 0;
let backlog = 0; // bytes given to xterm not yet parsed
let idleWaiters: Array<() => void> = [];
let generation = 0; // bumped on every (re)attach, so late replies of an older one are ignored

function feed(bytes: Uint8Array, done?: () => void): void {
  backlog += bytes.length;
  term.write(bytes, () => {
    backlog -= bytes.length;
    done?.();
    if (backlog === 0) {
      const w = idleWaiters;
      idleWaiters = [];
      for (const f of w) f();
    }
  });
}

/** Resolves once xterm.js has parsed everything written to it (term.reset() does not drop queued writes). */
function whenIdle(): Promise<void> {
  if (backlog === 0) return Promise.resolve();
  return new Promise((resolve) => idleWaiters.push(resolve));
}

function hold(offset: number, bytes: Uint8Array): void {
  held.push({ offset, bytes });
  heldBytes += bytes.length;
  while (heldBytes > HELD_OUTPUT_MAX && held.length > 1) heldBytes -= held.shift()!.bytes.length;
}

function writeFrom(offset: number, chunks: Held[]): void {
  for (const c of chunks) {
    const end = c.offset + c.bytes.length;
    if (end <= offset) continue;
    feed(c.offset < offset ? c.bytes.subarray(offset - c.offset) : c.bytes);
  }
}

/** Paint a snapshot into a fresh terminal of its size, then the output held since its offset, then fit the window. */
async function paint(id: number, snapshot: Snapshot, gen: number): Promise<void> {
  mode = "painting";
  await whenIdle();
  if (gen !== generation || current !== id) return;
  term.reset();
  if (term.cols !== snapshot.cols || term.rows !== snapshot.rows) term.resize(snapshot.cols, snapshot.rows);
  // Fit to the window once the snapshot is parsed at the session's size; the resize then goes to the session.
  feed(snapshot.data, () => fitNow());
  const chunks = held;
  held = [];
  heldBytes = 0;
  writeFrom(snapshot.offset, chunks);
  mode = "live";
}

async function attach(id: number): Promise<void> {
  const previous = current;
  const gen = ++generation;
  current = id;
  mode = "attaching";
  held = [];
  heldBytes = 0;
  updateHash();
  renderBar();
  if (previous !== null && previous !== id) client.detachSession(previous).catch(() => undefined);
  try {
    const r = await client.attachSession(id, { snapshot: true });
    if (gen !== generation) return;
    if (r.snapshot) await paint(id, r.snapshot, gen);
    setStatus(null);
    term.focus();
  } catch (err) {
    if (gen !== generation) return;
    current = null;
    mode = "none";
    updateHash();
    renderBar();
    setStatus(`Cannot attach session ${id}: ${(err as Error).message}`, "error");
  }
  void refreshList();
}

/** Too much output waiting for xterm.js: drop output until it has caught up, then re-attach for a snapshot. */
function catchUp(id: number): void {
  mode = "draining";
  const gen = generation;
  void whenIdle().then(async () => {
    if (gen !== generation || current !== id) return;
    mode = "attaching";
    held = [];
    heldBytes = 0;
    try {
      const r = await client.attachSession(id, { snapshot: true });
      if (gen === generation && r.snapshot) await paint(id, r.snapshot, gen);
    } catch {
      /* an exit or a disconnect says why */
    }
  });
}

client.on("output", (ev) => {
  if (ev.session !== current) return;
  switch (mode) {
    case "live":
      if (backlog > XTERM_BACKLOG_MAX) catchUp(ev.session);
      else feed(ev.bytes);
      break;
    case "attaching":
    case "painting":
      hold(ev.offset, ev.bytes);
      break;
    default:
      break; // draining: the snapshot that follows covers it
  }
});

// The daemon discarded this connection's backlog (backpressure), or the outage outlasted its replay window.
client.on("resync", (ev) => {
  if (ev.session !== current) return;
  held = [];
  heldBytes = 0;
  void paint(ev.session, ev.snapshot, generation);
});

client.on("exit", (ev) => {
  if (ev.session === current) {
    const how = ev.signal !== null ? `killed by signal ${ev.signal}` : `exited with code ${ev.code}`;
    feed(new TextEncoder().encode(`\r\n\x1b[0;7m[session ${ev.session} ${how}]\x1b[0m\r\n`));
    current = null;
    mode = "none";
    updateHash();
    renderBar();
  }
  void refreshList();
});

client.on("shutdown", (ev) => {
  setStatus(`The daemon is shutting down${ev.reason ? ` (${ev.reason})` : ""}; reconnecting when it is back…`, "warn");
});
client.on("disconnect", () => {
  if (!closedForGood) setStatus("Connection lost: reconnecting…", "warn");
});
client.on("reconnect", (ev) => {
  lastReconnect = ev;
  setStatus(null);
  const failed = ev.sessions.filter((s) => s.mode === "failed");
  if (current !== null && failed.some((s) => s.session === current)) {
    setStatus(`Session ${current} is gone.`, "warn");
    current = null;
    mode = "none";
    updateHash();
    renderBar();
  }
  void refreshList();
});
client.on("close", (ev) => {
  if (closedForGood) return;
  closedForGood = true;
  setStatus(`Disconnected for good (${ev.reason}). Reload the page to try again.`, "error");
});
client.on("error", (err) => {
  if (err.code === "session_exited" || err.code === "session_not_found") return; // typing into an exited session
  console.warn("vibest-pty:", err.code, err.message);
});

// -- typing, paste, resize --------------------------------------------------------------------------------------

// onData carries typed keys and pasted text (xterm.js adds bracketed-paste markers when the program asked for them).
// Keys go to the session in every mode: while the page catches up after a flood (draining, re-attaching, painting)
// is exactly when the user presses Ctrl-C; the daemon takes input whatever this page's screen is doing.
term.onData((data) => {
  if (current !== null) client.sendInput(current, data);
});
term.onBinary((data) => {
  if (current === null) return;
  const bytes = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
  client.sendInput(current, bytes);
});
term.onResize(({ cols, rows }) => {
  if (current !== null && mode !== "attaching") client.resize(current, cols, rows).catch(() => undefined);
});

function fitNow(): void {
  try {
    fit.fit();
  } catch {
    /* not laid out yet */
  }
}
let resizeTimer: ReturnType<typeof setTimeout> | undefined;
new ResizeObserver(() => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (mode === "live" || mode === "none") fitNow();
  }, RESIZE_DEBOUNCE_MS);
}).observe($("terminal"));

// -- the session list and buttons -------------------------------------------------------------------------------

const listEl = $<HTMLUListElement>("sessions");
let sessions: SessionInfo[] = [];

function label(s: SessionInfo): string {
  return s.name || s.title || s.command.join(" ");
}

function renderList(): void {
  listEl.replaceChildren();
  $("empty").hidden = sessions.length > 0;
  for (const s of sessions) {
    const li = document.createElement("li");
    li.dataset.session = String(s.id);
    li.className = (s.id === current ? "current " : "") + (s.running ? "running" : "exited");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${s.id}  ${label(s)}`;
    const meta = document.createElement("span");
    meta.className = "meta";
    const state = s.running ? `${s.clients} client${s.clients === 1 ? "" : "s"}` : `exited ${s.exit_code ?? ""}`;
    meta.textContent = `${s.cols}×${s.rows} · ${state}${s.cwd ? ` · ${s.cwd}` : ""}`;
    li.append(name, meta);
    li.title = s.command.join(" ");
    li.addEventListener("click", () => {
      if (s.id !== current) void attach(s.id);
    });
    listEl.append(li);
  }
}

function renderBar(): void {
  const s = sessions.find((x) => x.id === current);
  $("current").textContent = current === null ? "not attached" : `session ${current}${s ? `: ${label(s)}` : ""}`;
  ($("detach") as HTMLButtonElement).disabled = current === null;
  ($("kill") as HTMLButtonElement).disabled = current === null;
  document.title = current === null ? "vibest-pty" : `${s ? label(s) : current} · vibest-pty`;
  for (const li of listEl.children) (li as HTMLElement).classList.toggle("current", li.getAttribute("data-session") === String(current));
}

async function refreshList(): Promise<void> {
  if (!client.connected) return;
  try {
    sessions = await client.listSessions();
    sessions.sort((a, b) => a.id - b.id);
    renderList();
    renderBar();
  } catch {
    /* the next poll retries */
  }
}

function updateHash(): void {
  const p = new URLSearchParams({ token });
  if (current !== null) p.set("session", String(current));
  history.replaceState(null, "", `#${p.toString()}`);
}

$("new").addEventListener("click", async () => {
  const size = fit.proposeDimensions();
  try {
    const info = await client.createSession(size ? { cols: size.cols, rows: size.rows } : {});
    await attach(info.id);
  } catch (err) {
    setStatus(`Cannot create a session: ${(err as Error).message}`, "error");
  }
});
$("detach").addEventListener("click", () => {
  const id = current;
  if (id === null) return;
  generation++;
  current = null;
  mode = "none";
  client.detachSession(id).catch(() => undefined);
  term.reset();
  term.write(`\x1b[2m[detached from session ${id}]\x1b[0m\r\n`);
  updateHash();
  renderBar();
  void refreshList();
});
$("kill").addEventListener("click", () => {
  if (current !== null) client.kill(current).catch((err: Error) => setStatus(`kill: ${err.message}`, "error"));
});

// -- start ------------------------------------------------------------------------------------------------------

async function start(): Promise<void> {
  if (!token) {
    setStatus("No token: open the address `vibest-pty web` printed (it ends in #token=…).", "error");
    return;
  }
  setStatus("Connecting…");
  fitNow();
  try {
    await client.waitForConnection({ timeoutMs: 24 * 3600 * 1000 });
  } catch (err) {
    if (!closedForGood) setStatus(`Cannot connect: ${(err as Error).message}`, "error");
    return;
  }
  setStatus(null);
  await refreshList();
  const wanted = Number(params.get("session"));
  if (params.has("session") && sessions.some((s) => s.id === wanted)) await attach(wanted);
  else if (sessions.length > 0) await attach(sessions.find((s) => s.running)?.id ?? sessions[0]!.id);
  setInterval(() => void refreshList(), LIST_POLL_MS);
}

// For tests and debugging: the visible screen as text, and the client.
declare global {
  interface Window {
    vibest: {
      client: PtyDaemonClient;
      term: Terminal;
      screenText(): string;
      state(): {
        current: number | null;
        mode: Mode;
        backlog: number;
        lastClose: WebSocketCloseInfo | null;
        lastReconnect: ReconnectEvent | null;
      };
    };
  }
}
window.vibest = {
  client,
  term,
  screenText() {
    const b = term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < term.rows; y++) lines.push(b.getLine(b.viewportY + y)?.translateToString(true) ?? "");
    return lines.join("\n");
  },
  state: () => ({ current, mode, backlog, lastClose, lastReconnect }),
};

void start();
