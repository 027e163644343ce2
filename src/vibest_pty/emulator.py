"""The terminal emulator behind every session: the only module that touches libghostty-vt (via pyghostty).

STUB: records nothing. The emulator issue replaces the body; the interface below is what the rest of the daemon uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ScreenState:
    """What a snapshot carries besides the offset (the session adds that)."""

    data: bytes
    cols: int
    rows: int
    cursor: tuple[int, int]
    cursor_visible: bool
    alt_screen: bool
    modes: dict[str, bool] = field(default_factory=dict)
    title: str = ""
    cwd: str | None = None
    scrollback_lines: int = 0


class Emulator:
    """A headless terminal of cols x rows keeping `scrollback_lines` lines of history."""

    def __init__(self, cols: int, rows: int, scrollback_lines: int) -> None:
        self.cols = cols
        self.rows = rows
        self.scrollback_lines = scrollback_lines

    def feed(self, data: bytes) -> None:
        """Process output bytes (any chunking, splits mid-UTF-8 or mid-escape are fine)."""

    def resize(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows

    @property
    def title(self) -> str:
        return ""

    @property
    def cwd(self) -> str | None:
        """The directory reported by OSC 7 (a path, not a URL), or None."""
        return None

    def snapshot(self) -> ScreenState:
        return ScreenState(b"", self.cols, self.rows, (0, 0), True, False)

    def close(self) -> None:
        """Free native memory now."""
