"""An emulator process's memory stays near the sessions' scrollback byte budgets, dense output and snapshots included.

Measured in a fresh child process (what a pool member runs: `warm_up()` then an `EmulatorHost`), from /proc: RSS
before the session, after lolcat-style output (every cell its own truecolor style) and after snapshots of it.
Before the fix a dense 1000x1000 session's process kept 46-113 MiB after two snapshots against a 39 MiB budget: glibc's
dynamic mmap threshold kept the freed snapshot buffers resident, and the snapshot pass copied the screen several
times over.
"""

from __future__ import annotations

import json
import subprocess
import sys

from vibest_pty.emulator import BUDGET_MAX, _scrollback_bytes

CHILD = r"""
import json, sys
from vibest_pty.emulator_host import EmulatorHost, warm_up

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

cols, rows, scrollback, lines = (int(a) for a in sys.argv[1:5])
warm_up()
events = []
host = EmulatorHost(events.append)
before = rss()
host.put(1, [("open", cols, rows, scrollback, True, None)])
for i in range(lines):
    line = "".join(f"\x1b[38;2;{(i + x) % 256};{x * 3 % 256};{i * 7 % 256}m{chr(33 + (x + i) % 90)}"
                   for x in range(cols - 1))
    host.put(1, [("feed", (line + "\x1b[0m\r\n").encode(), False)])
    host.run_all()
    events.clear()
fed = rss()
sizes = []
degraded = []
for jid in range(2):
    host.put(1, [("snapshot", jid, 16 * 1024 * 1024 - 64 * 1024)])
    host.run_all()
    sizes.append(len(events[-1][3]["data"]))
    degraded.append(events[-1][3].get("degraded"))
    events.clear()
print(json.dumps({"before": before, "fed": fed, "after": rss(), "sizes": sizes, "degraded": degraded}))
"""


def test_a_dense_1000x1000_sessions_process_stays_near_its_scrollback_budget() -> None:
    cols, rows, scrollback, lines = 1000, 1000, 1000, 1500
    out = subprocess.run([sys.executable, "-c", CHILD, str(cols), str(rows), str(scrollback), str(lines)],
                         capture_output=True, text=True, timeout=300, check=True)
    m = json.loads(out.stdout)
    budget = _scrollback_bytes(scrollback, cols, rows, BUDGET_MAX)  # 39.4 MiB: the most the budget grows to
    mib = 1 << 20
    figures = {k: round((m[k] - m["before"]) / mib, 1) for k in ("fed", "after")}
    # The snapshots were big: the exact encoding (~21.6 MiB) is formatted up to the 16 MiB limit, then the screen is
    # served quantised to the palette (~2.2 MiB, tests/test_snapshot_fit.py).
    assert m["degraded"] == ["palette", "palette"] and all(s > mib for s in m["sizes"]), m
    # The page list stays within its budget (measured: 23 MiB after the output), and what the snapshots allocated
    # went back (measured: 2.6 MiB left; 22-90 MiB before the fix, 46-113 MiB over the start).
    assert m["fed"] - m["before"] <= budget * 1.25, figures
    assert m["after"] - m["fed"] <= 8 * mib, figures
