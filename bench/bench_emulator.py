"""Emulator figures: feed throughput (plain and SGR-dense), snapshot time, memory per terminal.

Run: python bench/bench_emulator.py  (figures go in docs/architecture.md, section Emulator)
"""

from __future__ import annotations

import resource
import time

from vibest_pty.emulator import Emulator

CHUNK = 65536


def _lines(n: int, sgr: bool) -> bytes:
    if sgr:
        fmt = "\x1b[1;3{c}mred\x1b[0m \x1b[38;5;{p}mpal\x1b[0m \x1b[38;2;{p};100;{q}mtrue\x1b[4m col\x1b[0m {i}\r\n"
        return "".join(fmt.format(c=i % 8, p=i % 256, q=(i * 7) % 256, i=i) for i in range(n)).encode()
    return "".join(
        f"log line {i} with enough words to look like real program output\r\n" for i in range(n)
    ).encode()


def feed_mbps(data: bytes, scrollback: int = 10_000) -> float:
    e = Emulator(80, 24, scrollback)
    for i in range(0, len(data), CHUNK):  # warm up: fill the scrollback so pages are recycled
        e.feed(data[i : i + CHUNK])
    t0 = time.perf_counter()
    for i in range(0, len(data), CHUNK):
        e.feed(data[i : i + CHUNK])
    dt = time.perf_counter() - t0
    e.close()
    return len(data) / dt / 1e6


def snapshot_ms(alt: bool) -> tuple[float, int]:
    e = Emulator(80, 24, 10_000)
    e.feed(_lines(12_000, sgr=True))
    if alt:
        e.feed(b"\x1b[?1049h\x1b[Hvim\x1b[5;5H")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        s = e.snapshot()
        best = min(best, time.perf_counter() - t0)
    e.close()
    return best * 1e3, len(s.data)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_per_terminal_mb(n: int = 10) -> float:
    base = rss_mb()
    data = _lines(11_000, sgr=False)
    emus = []
    for _ in range(n):
        e = Emulator(80, 24, 10_000)
        for i in range(0, len(data), CHUNK):
            e.feed(data[i : i + CHUNK])
        emus.append(e)
    used = (rss_mb() - base) / n
    for e in emus:
        e.close()
    return used


def main() -> None:
    plain, sgr = _lines(40_000, sgr=False), _lines(40_000, sgr=True)
    print(f"feed plain text      : {feed_mbps(plain):7.0f} MB/s")
    print(f"feed SGR-dense text  : {feed_mbps(sgr):7.0f} MB/s")
    for alt in (False, True):
        ms, size = snapshot_ms(alt)
        print(
            f"snapshot 10k lines 80x24{' (alt screen active)' if alt else ''}: {ms:.1f} ms, {size / 1e6:.2f} MB"
        )
    print(f"memory per terminal, 10k lines of history at 80 cols: {memory_per_terminal_mb():.1f} MB")


if __name__ == "__main__":
    main()
