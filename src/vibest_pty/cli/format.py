"""What the CLI prints, as pure functions: the `ls` table, the stats, a snapshot as text, and `escape`, which
every string that came from a session goes through before it reaches the user's terminal."""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

# C0 (U+0000..U+001F), DEL and C1 (U+0080..U+009F): a terminal acts on these. A session's name, cwd (OSC 7 is
# percent-decoded, so `%1b]52;c;...%07` arrives as a real ESC), title or command may hold them, and printing them
# raw would let whatever the session printed write the user's clipboard or title.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escape_one(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group(0)):02x}"


def escape(text: object) -> str:
    """`text` with every control character shown as `\\xHH` (so ESC is `\\x1b`); printable text is unchanged."""
    return _CONTROL.sub(_escape_one, str(text))


def escape_text(text: str) -> str:
    """Like `escape`, keeping newlines (for multi-line text such as a screen)."""
    return "\n".join(escape(line) for line in text.split("\n"))


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def format_state(info: Mapping[str, Any]) -> str:
    if info.get("running"):
        # With shell integration: what the shell does and the last command's status, e.g. "running prompt last=3".
        state = "running"
        if info.get("shell_state") in ("prompt", "running"):
            state += " " + ("cmd" if info["shell_state"] == "running" else "prompt")
        last = info.get("last_command")
        if isinstance(last, Mapping) and last.get("exit_code") is not None:
            state += f" last={int(last['exit_code'])}"
        return state
    if info.get("exit_signal") is not None:
        return f"exited {signame(int(info['exit_signal']))}"
    code = info.get("exit_code")
    return "exited" if code is None else f"exited {code}"


def _shorten(text: str, width: int, left: bool = False) -> str:
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if left else text[: width - 1] + "…"


def _tilde(path: str, home: str) -> str:
    if home and home != "/" and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home) :]
    return path


def format_table(sessions: Sequence[Mapping[str, Any]], now: float | None = None, home: str | None = None) -> str:
    """The `ls` table: one row per session, columns padded to their widest cell, every cell escaped."""
    now = time.time() if now is None else now
    home = os.path.expanduser("~") if home is None else home
    header = ["ID", "NAME", "PID", "COMMAND", "CWD", "SIZE", "CLIENTS", "STATE", "AGE"]
    rows = [header]
    for s in sorted(sessions, key=lambda s: int(s.get("id", 0))):
        rows.append([
            escape(s.get("id", "")),
            _shorten(escape(s.get("name") or ""), 20),
            escape(s.get("pid", "")),
            _shorten(escape(shlex.join(s.get("command") or [])), 40),
            _shorten(escape(_tilde(str(s.get("cwd") or ""), home)), 40, left=True),
            escape(f"{s.get('cols', '?')}x{s.get('rows', '?')}"),
            escape(s.get("clients", 0)),
            format_state(s),
            format_age(now - float(s.get("created_at") or now)),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_stats(st: Mapping[str, Any]) -> str:
    lines = [
        f"uptime       {format_age(float(st.get('uptime', 0)))}",
        f"connections  {escape(st.get('connections', 0))}",
        f"sessions     {escape(st.get('sessions', 0))} ({escape(st.get('running', 0))} running)",
        f"bytes in     {format_bytes(st.get('bytes_in', 0))}",
        f"bytes out    {format_bytes(st.get('bytes_out', 0))}",
        f"rss          {format_bytes(st.get('rss', 0))}",
    ]
    queues = st.get("queues") or []
    if queues:
        lines.append("queues (session connection events bytes level):")
        lines += [
            "  " + escape(f"{q.get('session')} {q.get('connection')} {q.get('events')} "
                          f"{format_bytes(q.get('bytes', 0))} {q.get('level')}")
            for q in queues
        ]
    return "\n".join(lines) + "\n"


def snapshot_text(snap: Mapping[str, Any], scrollback: bool = False) -> str:
    """The screen (and with `scrollback` the history above it) as text, rendered by the same emulator the
    daemon uses: the snapshot's data written into a fresh terminal of its size. Escaped like everything else."""
    from ..emulator import Emulator

    cols, rows = int(snap.get("cols") or 80), int(snap.get("rows") or 24)
    with Emulator(cols, rows, max(int(snap.get("scrollback_lines") or 0), 1)) as emu:
        emu.feed(bytes(snap.get("data") or b""))
        text = emu.text(scrollback)
    text = "\n".join(ln.rstrip() for ln in text.split("\n")).rstrip("\n")
    return escape_text(text) + "\n" if text else ""
