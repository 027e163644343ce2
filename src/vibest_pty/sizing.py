"""Which size a session has when several clients of different sizes look at it (tmux's `window-size`).

Sans-I/O: `SizePolicy` is told what clients do (resize, type, leave) and answers with the session's new size, or
None when it stays. Policies:

- `latest` (default): the client that most recently resized or typed sets the size (zmx's leader rule); when it
  leaves, the most recent of the others that still has a size;
- `smallest` / `largest`: the smallest / largest columns and rows over the clients that sent a size (each
  dimension on its own, as tmux does);
- `manual`: only explicit resizes count; typing and leaving change nothing.

A client counts from its first `resize` until it leaves (detach, disconnect); read-only clients never count.
"""

from __future__ import annotations

from typing import Final

POLICIES: Final = ("latest", "smallest", "largest", "manual")

Size = tuple[int, int]


class SizePolicy:
    __slots__ = ("_current", "_sizes", "policy")

    def __init__(self, policy: str, cols: int, rows: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"size_policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self._current: Size = (cols, rows)
        self._sizes: dict[int, Size] = {}  # by client, least recently active first

    def resize(self, client: int, cols: int, rows: int) -> Size | None:
        self._sizes.pop(client, None)
        self._sizes[client] = (cols, rows)
        if self.policy in ("latest", "manual"):
            return self._set((cols, rows))
        return self._set(self._aggregate())

    def typed(self, client: int) -> Size | None:
        if self.policy != "latest":
            return None
        size = self._sizes.get(client)
        if size is None:
            return None
        if next(reversed(self._sizes)) != client:
            del self._sizes[client]
            self._sizes[client] = size
        return self._set(size)

    def leave(self, client: int) -> Size | None:
        if self._sizes.pop(client, None) is None or self.policy == "manual" or not self._sizes:
            return None
        if self.policy == "latest":
            return self._set(next(reversed(self._sizes.values())))
        return self._set(self._aggregate())

    def _aggregate(self) -> Size:
        pick = min if self.policy == "smallest" else max
        return pick(c for c, _ in self._sizes.values()), pick(r for _, r in self._sizes.values())

    def _set(self, size: Size) -> Size | None:
        if size == self._current:
            return None
        self._current = size
        return size
