"""The shapes of what the daemon sends (docs/protocol.md), as TypedDicts: the daemon builds its replies and events
with them and the Python client returns them (client.py re-exports every name), so mypy checks both ends against
one description. tests/vectors/shapes.json describes the same shapes for the TypeScript SDK; tests/test_shapes.py
checks these TypedDicts against that file and a live daemon's replies.

TypedDicts, not dataclasses: a value is the plain dict msgpack encodes and decodes (`info["id"]`), so the hot path
pays nothing for the typing.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# -- data types ---------------------------------------------------------------------------------------------------


class HelloInfo(TypedDict):
    """The `hello` reply without its envelope (type, id)."""

    protocol: int
    version: str
    pid: int
    features: list[str]
    instance: str  # random per daemon start, kept across an in-place upgrade
    started_at: float


class LastCommand(TypedDict):
    command: str | None
    exit_code: int | None
    started_at: float
    finished_at: float | None
    cwd: str | None


class ShellFields(TypedDict):
    """The SessionInfo fields of shell integration (agent.py)."""

    shell_state: str  # "prompt" | "running" | "unknown" (docs/protocol.md "Agents")
    shell_integration: bool
    last_command: LastCommand | None


class SessionInfo(ShellFields):
    id: int
    pid: int
    command: list[str]
    name: str
    tags: dict[str, str]
    cwd: str
    title: str
    cols: int
    rows: int
    created_at: float
    last_attached_at: float | None
    running: bool
    exit_code: int | None
    exit_signal: int | None
    clients: int
    process: str  # the terminal's foreground program (its process group leader's name)


class Snapshot(TypedDict):
    data: bytes
    offset: int
    cols: int
    rows: int
    cursor: list[int]  # [column, row], 0-based
    cursor_visible: bool
    alt_screen: bool
    modes: dict[str, bool]
    title: str
    cwd: str | None
    scrollback_lines: int
    degraded: NotRequired[str]  # "palette" | "plain" | "rows": the exact encoding did not fit (snapshot.py)


class SubscriberStats(TypedDict):
    """One subscriber's queue (flow.Subscriber.stats); the server adds the connection to make a QueueStats."""

    session: int
    events: int
    bytes: int
    level: str  # "green" | "yellow" | "red"
    discarded: int
    resyncs: int
    warnings: int


class QueueStats(SubscriberStats):
    connection: int


class EmulatorStats(TypedDict):
    """One emulator process of the pool (emulator_process.py)."""

    pid: int
    rss: int
    sessions: int
    restarts: int


class Stats(TypedDict):
    """The `stats` reply without its envelope."""

    version: str
    instance: str
    upgrades: int
    last_upgrade_pause_ms: float | None
    uptime: float
    connections: int
    sessions: int
    running: int
    bytes_in: int
    bytes_out: int
    frames_out: int
    rss: int
    emulators: list[EmulatorStats]
    emulators_rss: int
    queues: list[QueueStats]


class AttachResult(TypedDict):
    """The `attach` reply without its envelope: a snapshot, or with `since` in the replay window the replay."""

    session: SessionInfo
    offset: int
    snapshot: NotRequired[Snapshot]
    replay: NotRequired[bytes]


class ListPage(TypedDict):
    """The `list` reply without its envelope: `next`, when set, is the `after` of the next page."""

    sessions: list[SessionInfo]
    next: NotRequired[int]


class RunResult(TypedDict):
    """The `run` reply without its envelope (docs/protocol.md "Agents")."""

    exit_code: int | None
    output: str  # rendered by an emulator of the session's width, at most 1 MiB (the end kept)
    output_offsets: list[int]  # [start, end] in the session's output
    duration_ms: int
    truncated: bool
    command: str | None


class WaitResult(TypedDict):
    """The `wait` reply without its envelope: the offset, and what the condition met."""

    offset: int
    shell_state: NotRequired[str]  # for "prompt"
    code: NotRequired[int | None]  # for "exit"
    signal: NotRequired[int | None]  # for "exit"
    match: NotRequired[str]  # for "text"


class TextResult(TypedDict):
    """The `text` reply without its envelope."""

    text: str
    offset: int
    truncated: bool


# -- events (no id) -----------------------------------------------------------------------------------------------


class OutputEvent(TypedDict):
    type: Literal["output"]
    session: int
    data: bytes
    offset: int


class ExitEvent(TypedDict):
    type: Literal["exit"]
    session: int
    code: int | None
    signal: int | None


class ResyncEvent(TypedDict):
    type: Literal["resync"]
    session: int
    snapshot: Snapshot


class BackpressureWarningEvent(TypedDict):
    type: Literal["backpressure_warning"]
    session: int
    queue_size: int
    level: str  # "yellow" | "red"


class ShutdownEvent(TypedDict):
    type: Literal["shutdown"]
    reason: str


class ErrorEvent(TypedDict):
    """An `error` without id: a failed request that had none (fire-and-forget input), or a failed resync."""

    type: Literal["error"]
    id: None
    code: str
    message: str
    request: NotRequired[str]
    session: NotRequired[int]


class CommandEvent(TypedDict):
    type: Literal["command"]
    session: int
    phase: str  # "start" | "end"
    seq: int
    offset: int
    command: NotRequired[str]
    exit_code: NotRequired[int]
    cwd: NotRequired[str]


class SessionCreatedEvent(TypedDict):
    type: Literal["session_created"]
    session: int
    info: SessionInfo


class SessionExitedEvent(TypedDict):
    type: Literal["session_exited"]
    session: int
    code: int | None
    signal: int | None


class SessionRemovedEvent(TypedDict):
    type: Literal["session_removed"]
    session: int


class UpgradedEvent(TypedDict):
    """The daemon replaced its code in place (docs/upgrade.md): same pid, same instance, nothing lost."""

    type: Literal["upgraded"]
    version: str
    previous_version: str


DaemonEvent = (OutputEvent | ExitEvent | ResyncEvent | BackpressureWarningEvent | ShutdownEvent | ErrorEvent
               | CommandEvent | SessionCreatedEvent | SessionExitedEvent | SessionRemovedEvent | UpgradedEvent)
