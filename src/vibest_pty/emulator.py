"""The terminal emulator behind every session: a libghostty-vt terminal with its history bounded in bytes.

`Emulator` owns one terminal handle and its life cycle (feed, resize, the scrollback byte budget, text); the
C calls are in `vt` (the only importer of pyghostty's cffi layer) and snapshots are composed by `snapshot`.
"""

from __future__ import annotations

from typing import Any

from . import snapshot as _snap
from . import vt
from .snapshot import ScreenState, pwd_path, title_text
from .vt import EmulatorError

__all__ = ["Emulator", "EmulatorError", "ScreenState"]

_CONTINUATION_MAX_BYTES = 1 << 20  # longest unfinished sequence kept for the snapshot tail (e.g. OSC 52)
CELL_W, CELL_H = 8, 16  # pixels per cell given to ghostty_terminal_resize (and reported by CSI 14/16 t)

BUDGET_START = 0.8  # x the row estimate: plain 80-col logs keep 10k rows at 0.8 (measured: ~7.6 MB budget)
BUDGET_MAX = 2.0  # x the row estimate: SGR-dense pages keep ~25% fewer rows per byte than plain ones
BUDGET_GROW = 1.25


def _scrollback_bytes(scrollback_lines: int, cols: int, rows: int, factor: float = BUDGET_MAX) -> int:
    """The byte budget for the page list that keeps `scrollback_lines` rows of history.

    The row estimate is 10 bytes per column plus 64 (pages of 8-byte cells with style/grapheme side tables), plus
    1 MiB for page granularity (pages are evicted whole). The budget starts at BUDGET_START x the estimate and
    grows (see Emulator.adapt_budget) when evictions leave fewer than `scrollback_lines` rows, up to BUDGET_MAX:
    measured at 80x24 with 10k lines after 60k lines of output, plain logs serve all 10k rows at 0.8x (a 2x
    budget filled 17.5 MB), SGR-dense output 8535 at 0.8x and all at 1.0x.
    """
    if scrollback_lines <= 0:
        return 0
    return int((scrollback_lines + rows) * (10 * cols + 64) * factor) + (1 << 20)


class Emulator:
    """A headless terminal of cols x rows keeping `scrollback_lines` lines of history.

    Not thread-safe: call every method from one thread (an emulator process's, through EmulatorHost). cffi
    releases the GIL during native calls, so two threads touching one Emulator would race inside libghostty-vt.
    """

    def __init__(self, cols: int, rows: int, scrollback_lines: int) -> None:
        if cols <= 0 or rows <= 0 or cols > 0xFFFF or rows > 0xFFFF:
            raise ValueError(f"bad terminal size {cols}x{rows}")
        self.cols = cols
        self.rows = rows
        self.scrollback_lines = max(0, scrollback_lines)
        self._t: Any = vt.terminal_new(cols, rows)  # the raw handle (responder.py and the tests read it too)
        self._replies = bytearray()
        self._budget = BUDGET_START
        self._history_seen = 0
        try:
            vt.set_continuation_max_bytes(self._t, _CONTINUATION_MAX_BYTES)
            self._apply_scrollback_limit()
        except Exception:
            vt.terminal_free(self._t)
            raise

    def _apply_scrollback_limit(self) -> None:
        vt.set_scrollback_max_bytes(
            self._t, _scrollback_bytes(self.scrollback_lines, self.cols, self.rows, self._budget)
        )

    def adapt_budget(self) -> None:
        """Grow the byte budget when evictions leave fewer history rows than `scrollback_lines` (dense styles,
        graphemes, hyperlinks cost more per row than the estimate): the history shrank while short."""
        if self._budget >= BUDGET_MAX or not self.scrollback_lines:
            return
        history = vt.total_rows(self._t) - self.rows
        if history < self._history_seen and history < self.scrollback_lines:
            self._budget = min(BUDGET_MAX, self._budget * BUDGET_GROW)
            self._apply_scrollback_limit()
        self._history_seen = history

    @property
    def closed(self) -> bool:
        return self._t is None

    def _live(self) -> Any:
        if self._t is None:
            raise EmulatorError("emulator is closed")
        return self._t

    def feed(self, data: bytes) -> None:
        """Process output bytes (any chunking, splits mid-UTF-8 or mid-escape are fine)."""
        if data:
            vt.write(self._live(), data)
            self.adapt_budget()

    def resize(self, cols: int, rows: int) -> None:
        """Resize; the primary screen reflows. The scrollback byte budget follows the width."""
        if cols <= 0 or rows <= 0 or cols > 0xFFFF or rows > 0xFFFF:
            raise ValueError(f"bad terminal size {cols}x{rows}")
        t = self._live()
        if cols > self.cols or rows > self.rows:  # grow the budget before the reflow needs it
            self.cols, self.rows = max(cols, self.cols), max(rows, self.rows)
            self._apply_scrollback_limit()
        vt.resize(t, cols, rows, CELL_W, CELL_H)
        self.cols, self.rows = cols, rows
        self._apply_scrollback_limit()

    @property
    def title(self) -> str:
        return title_text(vt.title(self._live()))

    @property
    def cwd(self) -> str | None:
        """The directory reported by OSC 7 (a path, not a URL), or None."""
        return pwd_path(vt.pwd(self._live()))

    def text(self, which: str | bool = False) -> str:
        """Plain text, soft-wrapped lines joined and trailing blanks trimmed, of `which`: "screen" (the active
        rows), "scrollback" (the served history: the last `scrollback_lines` rows) or "all" (both). A bool is the
        older form: True is "all", False "screen"."""
        if isinstance(which, bool):
            which = "all" if which else "screen"
        t = self._live()
        cols, rows = vt.size(t)
        total = vt.total_rows(t)
        history = total - rows
        first = history - min(history, self.scrollback_lines) if which != "screen" else history
        last = history - 1 if which == "scrollback" else total - 1
        if last < first:
            return ""
        out = vt.format_plain(t, vt.selection(t, 0, first, cols - 1, last), unwrap=True, trim=True)
        return out.decode("utf-8", "replace")

    def modes(self) -> dict[str, bool]:
        """Every mode in snapshot.MODES by name, plus `alt_screen` (whether the alternate screen is active)."""
        return _snap.modes(self._live())

    def take_replies(self) -> bytes:
        """Bytes the terminal answered on its own since the last call (query replies) for the PTY. Without a
        Responder (responder.py) no WRITE_PTY callback is registered and this stays empty."""
        out, self._replies = bytes(self._replies), bytearray()
        return out

    def snapshot_wire(self, max_bytes: int = 1 << 62) -> dict[str, Any]:
        return self.snapshot(max_bytes).to_wire()

    def snapshot(self, max_bytes: int = 1 << 62) -> ScreenState:
        """The state as VT bytes for a fresh terminal of the same size, plus the parsed facts (see snapshot.py).

        Cost grows with the content and the history served (about 20 ms for 10k lines at 80 columns, more with
        the alternate screen active, which clones the terminal); the live terminal's state is not modified (a
        render state may clear its dirty-row flags, which nothing here reads). When
        `data` would pass `max_bytes`, history is served from fewer rows (the oldest are dropped) until it fits;
        `scrollback_lines` says how many were served. When the screen alone does not fit, the encoding is degraded
        until it does, and `degraded` says how (see snapshot.snapshot).
        """
        return _snap.snapshot(self._live(), self.scrollback_lines, max_bytes)

    def close(self) -> None:
        """Free native memory now. Further calls raise EmulatorError."""
        if self._t is not None:
            vt.terminal_free(self._t)
            self._t = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
