"""Deterministic output workloads: what a program writes to its terminal. Each generator returns bytes with bare
"\n" line ends (the PTY's ONLCR turns them into "\r\n", in every measured path alike).

- plain:     ASCII log lines (timestamps, levels, key=value), 60-110 columns, some wrap at 80.
- sgr:       dense colours: 16-colour, 256-colour and truecolor foreground/background, bold/underline, resets.
- repaint80 / repaint200: full-screen redraw traffic of a TUI (alternate screen, per-row cursor moves, erase
             to end of line, coloured text, a status bar), frames sized for 80x24 and 200x50.
- utf8:      UTF-8 text mixing ASCII, CJK (double width), emoji (incl. ZWJ sequences and skin tones) and accents.
"""

from __future__ import annotations

import random
from collections.abc import Callable

UNIT = 1 << 20  # generated once per workload, then repeated up to the requested size


def plain(rng: random.Random) -> bytes:
    levels = ["INFO", "DEBUG", "WARN", "ERROR"]
    words = ["request", "handled", "cache", "miss", "worker", "queue", "flushed", "retry", "connection", "user",
             "session", "compile", "linking", "test", "passed", "module", "build", "artifact", "upload"]
    out = []
    n = 0
    i = 0
    while n < UNIT:
        msg = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        line = (f"2025-01-{1 + i % 28:02d}T12:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z "
                f"{rng.choice(levels):5} [worker-{i % 16}] {msg} id={rng.getrandbits(32):08x} "
                f"took={rng.randint(1, 999)}ms\n")
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out).encode()


def sgr(rng: random.Random) -> bytes:
    words = ["ok", "fail", "src/main.rs", "warning:", "error[E0308]", "-->", "|", "^^^^", "note:", "build",
             "12.3ms", "PASS", "FAIL", "diff", "+added", "-removed"]
    out = []
    n = 0
    while n < UNIT:
        parts = []
        for _ in range(rng.randint(4, 10)):
            k = rng.randrange(6)
            w = rng.choice(words)
            if k == 0:
                parts.append(f"\x1b[{30 + rng.randrange(8)}m{w}\x1b[0m")
            elif k == 1:
                parts.append(f"\x1b[1;{90 + rng.randrange(8)}m{w}\x1b[22;39m")
            elif k == 2:
                parts.append(f"\x1b[38;5;{rng.randrange(256)}m{w}")
            elif k == 3:
                parts.append(f"\x1b[38;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m{w}")
            elif k == 4:
                parts.append(f"\x1b[48;5;{rng.randrange(256)};4m{w}\x1b[24;49m")
            else:
                parts.append(f"\x1b[48;2;{rng.randrange(256)};{rng.randrange(256)};{rng.randrange(256)}m{w}"
                             "\x1b[0m")
        line = " ".join(parts) + "\x1b[0m\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()


def _repaint(cols: int, rows: int) -> Callable[[random.Random], bytes]:
    def gen(rng: random.Random) -> bytes:
        alphabet = "abcdefghijklmnopqrstuvwxyz     0123456789(){};=+-*/"
        out = ["\x1b[?1049h\x1b[?25l"]
        n = 0
        frame = 0
        while n < UNIT:
            parts = ["\x1b[H"]
            for r in range(1, rows):
                if rng.random() < 0.3:
                    continue  # rows that did not change are not redrawn
                text = "".join(rng.choice(alphabet) for _ in range(rng.randint(cols // 3, cols - 6)))
                cut = rng.randint(0, len(text))
                parts.append(f"\x1b[{r};1H\x1b[38;5;{240 + r % 16}m{r:4d} \x1b[0m{text[:cut]}"
                             f"\x1b[{31 + r % 7}m{text[cut:]}\x1b[0m\x1b[K")
            status = f" NORMAL  frame {frame}  {rng.randrange(1, 9999)}:{rng.randrange(1, 200)} "
            parts.append(f"\x1b[{rows};1H\x1b[7m{status.ljust(cols)[:cols]}\x1b[27m\x1b[{rng.randint(1, rows - 1)};"
                         f"{rng.randint(6, cols)}H")
            s = "".join(parts)
            out.append(s)
            n += len(s)
            frame += 1
        out.append("\x1b[?25h\x1b[?1049l")
        return "".join(out).encode()

    return gen


def utf8(rng: random.Random) -> bytes:
    cjk = [chr(0x4E00 + i) for i in range(0, 2000, 7)] + [chr(0x3042 + i) for i in range(0, 80, 2)] + \
        [chr(0xAC00 + i) for i in range(0, 3000, 13)]
    emoji = ["😀", "🚀", "✅", "❌", "🔥", "👍🏽", "👩‍💻", "🏳️‍🌈", "🇯🇵", "⚠️", "📦", "🐍"]
    latin = ["café", "naïve", "Ångström", "über", "Ελληνικά", "кириллица", "e\u0301", "a\u0308"]
    out = []
    n = 0
    while n < UNIT:
        parts = []
        width = 0
        while width < 60:
            k = rng.randrange(4)
            if k == 0:
                s = "".join(rng.choice(cjk) for _ in range(rng.randint(2, 8)))
                width += 2 * len(s)
            elif k == 1:
                s = rng.choice(emoji)
                width += 2
            elif k == 2:
                s = rng.choice(latin)
                width += len(s)
            else:
                s = "ascii-" + str(rng.randrange(1000))
                width += len(s)
            parts.append(s)
        line = " ".join(parts) + "\n"
        out.append(line)
        n += len(line.encode())
    return "".join(out).encode()


# name: (generator, cols, rows)
WORKLOADS: dict[str, tuple[Callable[[random.Random], bytes], int, int]] = {
    "plain": (plain, 80, 24),
    "sgr": (sgr, 80, 24),
    "repaint80": (_repaint(80, 24), 80, 24),
    "repaint200": (_repaint(200, 50), 200, 50),
    "utf8": (utf8, 80, 24),
}


def generate(name: str, size: int) -> bytes:
    gen = WORKLOADS[name][0]
    unit = gen(random.Random(name))
    reps = max(1, -(-size // len(unit)))
    return unit * reps


def write_file(name: str, size: int, path: str) -> int:
    data = generate(name, size)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def scrollback_lines(n: int, cols: int = 80) -> bytes:
    """n lines, each exactly `cols` printable columns (some with colours), for filling a history."""
    rng = random.Random(f"scrollback{cols}")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ,.;:-_/"
    out = []
    for i in range(n):
        text = "".join(rng.choice(alphabet) for _ in range(cols - 8))
        if i % 4 == 0:  # a quarter of the lines carry colours
            a = rng.randrange(len(text) - 10)
            text = f"{text[:a]}\x1b[1;3{i % 8}m{text[a:a + 10]}\x1b[0m{text[a + 10:]}"
        out.append(f"{i:7d} {text}\n")
    return "".join(out).encode()
