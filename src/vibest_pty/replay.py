"""The last `max_bytes` of a session's raw output, for `attach` with `since` and for rebuilding an emulator."""

from __future__ import annotations

from . import protocol
from .protocol import ProtocolError


class ReplayWindow:
    __slots__ = ("_buf", "end", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self.end = 0  # the stream offset just past the last byte appended

    @property
    def start(self) -> int:
        return self.end - len(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def append(self, data: bytes) -> None:
        self.end += len(data)
        if not self.max_bytes:
            return
        self._buf += data
        excess = len(self._buf) - self.max_bytes
        if excess > 0:
            del self._buf[:excess]

    def set_limit(self, max_bytes: int) -> None:
        """Keep at most `max_bytes` from now on (the oldest bytes go first). Shrinking copies what is kept into a
        new buffer: a bytearray trimmed at the front keeps its allocation, and freeing it is the point."""
        self.max_bytes = max_bytes
        if len(self._buf) > max_bytes:
            self._buf = bytearray(self._buf[len(self._buf) - max_bytes :]) if max_bytes else bytearray()

    def since(self, offset: int) -> bytes | None:
        """Output from `offset` to the end, or None when `offset` is older than the window."""
        if offset > self.end:
            raise ProtocolError(protocol.INVALID_ARGUMENT, f"since={offset} is past the session's offset {self.end}")
        if offset < self.start:
            return None
        return bytes(self._buf[offset - self.start :])

    def restore(self, end: int, data: bytes, max_bytes: int | None = None) -> None:
        """The state of another process's window (an in-place upgrade): `data` ends at offset `end`; `max_bytes`
        as it was there (shrunk while nobody was attached, see SessionLimits.replay_idle_s)."""
        if max_bytes is not None:
            self.max_bytes = max_bytes
        self._buf = bytearray(data[-self.max_bytes:] if self.max_bytes else b"")
        self.end = end

    def window(self) -> tuple[int, bytes]:
        """(start offset, bytes) of what is kept."""
        return self.start, bytes(self._buf)
