/** Protocol data types (docs/protocol.md). Field names are the wire's (snake_case). */

export interface SessionInfo {
  id: number;
  pid: number;
  command: string[];
  name: string;
  tags: Record<string, string>;
  cwd: string;
  title: string;
  cols: number;
  rows: number;
  /** Unix seconds. */
  created_at: number;
  last_attached_at: number | null;
  running: boolean;
  exit_code: number | null;
  exit_signal: number | null;
  /** Connections attached to it. */
  clients: number;
  /** The terminal's foreground program (its process group leader's name, at most 15 bytes); "" once exited. */
  process: string;
  /** From shell integration (OSC 133): "prompt", "running", or "unknown" (no mark seen). */
  shell_state: "prompt" | "running" | "unknown";
  /** Whether the daemon injected shell integration (bash, zsh, fish). */
  shell_integration: boolean;
  /** The running or last finished command, when marks were seen. */
  last_command: LastCommand | null;
}

/** runCommand's result (docs/protocol.md "Agents"). */
export interface RunResult {
  exit_code: number | null;
  /** The command's output as plain text rendered by the daemon's emulator (at most 1 MiB, the end kept). */
  output: string;
  output_offsets: [number, number];
  duration_ms: number;
  truncated: boolean;
  command: string | null;
}

export type WaitCondition =
  | { for: "prompt"; timeoutMs?: number }
  | { for: "exit"; timeoutMs?: number }
  | { for: "idle"; idleMs?: number; timeoutMs?: number }
  | { for: "text"; pattern: string; timeoutMs?: number };

export interface WaitResult {
  offset: number;
  shell_state?: string;
  code?: number | null;
  signal?: number | null;
  match?: string;
}

export interface TextResult {
  text: string;
  offset: number;
  truncated: boolean;
}

export interface LastCommand {
  command: string | null;
  exit_code: number | null;
  /** Unix seconds. */
  started_at: number;
  finished_at: number | null;
  cwd: string | null;
}

export interface Snapshot {
  /** Written into a fresh terminal of cols x rows, reproduces scrollback, screen, attributes, cursor and modes. */
  data: Uint8Array;
  /** The session's output offset the snapshot was taken at. */
  offset: number;
  cols: number;
  rows: number;
  /** 0-based [column, row]. */
  cursor: [number, number];
  cursor_visible: boolean;
  alt_screen: boolean;
  modes: Record<string, boolean>;
  title: string;
  cwd: string | null;
  scrollback_lines: number;
  /**
   * Present when the exact encoding did not fit the frame limit: "palette" (truecolour as 256 colours), "plain"
   * (text only, no colours or attributes), "rows" (plain, only the bottom rows of the screen, no scrollback).
   */
  degraded?: "palette" | "plain" | "rows";
}

export interface HelloInfo {
  protocol: number;
  version: string;
  pid: number;
  features: string[];
  /** Random per daemon start, kept across an in-place upgrade: another value after a reconnect = another daemon. */
  instance: string;
  /** The daemon's start (seconds since the epoch). */
  started_at: number;
}

export interface CreateSessionOptions {
  /** Program to run; a name without `/` is looked up in PATH. Default: the daemon's $SHELL, else /bin/sh. */
  shell?: string;
  args?: string[];
  /** Must be an existing directory. Default: the daemon's $HOME. */
  cwd?: string;
  /** Merged over the daemon's environment (env_mode "merge"), or the whole environment (env_mode "replace"). */
  env?: Record<string, string>;
  /** "merge" (default): env is added to the daemon's environment; "replace": env is all the session gets. */
  env_mode?: "merge" | "replace";
  /** bash, zsh and fish get OSC 133 shell integration injected (default true): command events, runCommand. */
  shell_integration?: boolean;
  cols?: number;
  rows?: number;
  name?: string;
  tags?: Record<string, string>;
  /** Subscribe this client from the very first byte (offset 0). */
  attach?: boolean;
  /** Who answers terminal queries (DA, CPR, colours, ...): the session ("daemon", default) or its clients. */
  queries?: "daemon" | "client";
  /** The colours OSC 10/11/12/4 queries are answered with (see colorsFromTheme). */
  colors?: Colors;
  /** The session's size when several clients resize it (default "latest"). */
  size_policy?: "latest" | "smallest" | "largest" | "manual";
  /** Kill the session this many seconds after its last client left (cancelled by an attach). */
  kill_after_detach_s?: number;
}

/** A session's colours: "#rrggbb", "#rgb" or "rgb:r/g/b"; palette from index 0, or index -> colour. */
export interface Colors {
  foreground?: string;
  background?: string;
  cursor?: string;
  palette?: string[] | Record<number, string>;
}

export interface AttachOptions {
  /** Send the terminal state at `offset` (default true). */
  snapshot?: boolean;
  /** Replay raw output from this offset if it is still in the daemon's replay window (else a snapshot is sent). */
  since?: number;
  /** Output only: input, resize and signal for this session from this client fail with `read_only`. */
  read_only?: boolean;
  /** Set the session's colours (what colour queries are answered with), e.g. colorsFromTheme(term.options.theme). */
  colors?: Colors;
}

export interface AttachResult {
  session: SessionInfo;
  /** Live `output` events follow from this offset: no gap, no duplicate. */
  offset: number;
  snapshot?: Snapshot;
  /** Raw output bytes from `since` to `offset` (when `since` was given and within the replay window). */
  replay?: Uint8Array;
}

export type BackpressureLevel = "green" | "yellow" | "red";

export interface QueueStats {
  session: number;
  connection: number;
  events: number;
  bytes: number;
  level: BackpressureLevel;
  /** Frames thrown away by overflows. */
  discarded: number;
  /** Resyncs sent to this subscriber. */
  resyncs: number;
  /** Backpressure warnings sent to this subscriber. */
  warnings: number;
}

/** One emulator process of the daemon's pool. */
export interface EmulatorStats {
  pid: number;
  /** Resident bytes. */
  rss: number;
  /** Sessions whose emulators it runs. */
  sessions: number;
  /** Times it was restarted after a crash (its sessions rebuilt from their replay windows). */
  restarts: number;
}

export interface Stats {
  version: string;
  /** The daemon's identity (HelloInfo.instance). */
  instance: string;
  /** In-place upgrades since the daemon started (docs/upgrade.md). */
  upgrades: number;
  last_upgrade_pause_ms: number | null;
  /** Seconds. */
  uptime: number;
  connections: number;
  sessions: number;
  running: number;
  bytes_in: number;
  bytes_out: number;
  /** Frames written to clients. */
  frames_out: number;
  rss: number;
  /** The emulator processes (docs/architecture.md, "Processes"). */
  emulators: EmulatorStats[];
  /** Their RSS summed (bytes); `rss` is the daemon's own. */
  emulators_rss: number;
  queues: QueueStats[];
}

export type SignalName =
  | "SIGHUP" | "SIGINT" | "SIGQUIT" | "SIGKILL" | "SIGTERM" | "SIGUSR1" | "SIGUSR2" | "SIGSTOP" | "SIGCONT"
  | "SIGTSTP" | "SIGWINCH" | "SIGALRM" | "SIGPIPE";

/** Signal names the daemon accepts ("SIGINT", "INT", any case) or a number. */
export type SignalSpec = SignalName | (string & {}) | number;
