"""Create/kill and connect/disconnect cycles against one daemon, with fds, children and RSS sampled as it goes.

    .venv/bin/python tests/soak/soak_leaks.py --cycles 1000 --rounds 5

Every round runs --cycles create/kill cycles and --cycles connect/disconnect cycles, then waits for the daemon's
fds and children to return to the baseline taken after a warm-up and prints RSS. Fails when fds or children do
not come back, or when RSS keeps growing (last round more than 8 MiB above the first).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import start_daemon, stop_daemon
from tests.test_reliability import children, connect_cycles, create_kill_cycles, open_fds, rss


async def soak(cycles: int, rounds: int) -> bool:
    d = start_daemon()
    ok = True
    try:
        c = await d.client()
        keep = await c.create(shell="/bin/sh", args=["-c", "seq 1 5000; exec cat"])
        await asyncio.sleep(0.3)
        await create_kill_cycles(d, c, 50)
        await connect_cycles(d, 50, keep["id"])
        fds0 = open_fds(d.pid)
        samples = []
        for r in range(rounds):
            t0 = time.monotonic()
            await create_kill_cycles(d, c, cycles)
            await connect_cycles(d, cycles, keep["id"])
            deadline = time.monotonic() + 15
            while True:
                fds, kids = open_fds(d.pid), children(d.pid)
                conns = (await c.stats())["connections"]
                if fds <= fds0 and kids == [keep["pid"]] and conns == 1:
                    break
                if time.monotonic() > deadline:
                    print(f"round {r}: NOT back to baseline: fds {fds}/{fds0}, children {kids}, connections {conns}")
                    ok = False
                    break
                await asyncio.sleep(0.05)
            samples.append(rss(d.pid))
            print(f"round {r}: {cycles} create/kill + {cycles} connect/disconnect in {time.monotonic() - t0:.1f} s; "
                  f"fds {open_fds(d.pid)} (baseline {fds0}); rss {samples[-1] / 2**20:.1f} MiB", flush=True)
        growth = samples[-1] - samples[0]
        print(f"RSS first round {samples[0] / 2**20:.1f} MiB, last {samples[-1] / 2**20:.1f} MiB "
              f"(growth {growth / 2**20:+.1f} MiB over {(rounds - 1) * cycles} cycles of each kind)")
        if growth > 8 * 2**20:
            ok = False
        await c.close()
    finally:
        stop_daemon(d)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ok = asyncio.run(soak(args.cycles, args.rounds))
    print("soak_leaks:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
