"""Cost of answering terminal queries in the daemon: the same flood (no queries in it) through sessions with
`queries: "daemon"` (the output filter on, the default) and `queries: "client"` (everything passed through), one
daemon, interleaved runs, median MB/s per workload.

    .venv/bin/python bench/bench_queries.py [--size-mb 8] [--runs 5] [--workloads plain,sgr,repaint80]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import common
import workloads


def flood(d: common.Daemon, path: str, cols: int, rows: int, queries: str) -> float:
    c = common.client(d)
    try:
        sid = c.create(shell="/bin/sh", args=["-c", f"read go; exec cat '{path}'"], cols=cols, rows=rows,
                       attach=True, queries=queries)["id"]
        time.sleep(0.05)
        t0 = time.perf_counter()
        c.send({"type": "input", "session": sid, "data": b"\n"})
        c.wait_event("exit", sid)
        dt = time.perf_counter() - t0
        c.request("kill", session=sid)
        return dt
    finally:
        c.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workloads", default="plain,sgr,repaint80")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    res: dict[str, Any] = {"size_mb": args.size_mb, "runs": args.runs, "mbps": {}}
    with tempfile.TemporaryDirectory() as tmp, common.new_daemon() as d:
        for name in args.workloads.split(","):
            _, cols, rows = workloads.WORKLOADS[name]
            path = os.path.join(tmp, name)
            size = workloads.write_file(name, int(args.size_mb * (1 << 20)), path)
            times: dict[str, list[float]] = {"daemon": [], "client": []}
            cpu: dict[str, list[float]] = {"daemon": [], "client": []}
            for i in range(args.runs):
                for mode in sorted(times, reverse=bool(i % 2)):  # alternate which goes first
                    c0 = common.cpu_with_emulators(d)
                    times[mode].append(flood(d, path, cols, rows, mode))
                    time.sleep(0.3)  # the emulator finishes the backlog: its CPU time counts for this run
                    cpu[mode].append(common.cpu_with_emulators(d) - c0)
            res["mbps"][name] = {m: round(size / common.med(t) / 1e6, 1) for m, t in times.items()}
            # CPU of the daemon and its emulator processes (which answer the queries) per MB: robust to a loaded
            # machine, unlike the wall clock.
            res["cpu_ms_per_mb"] = res.get("cpu_ms_per_mb", {})
            res["cpu_ms_per_mb"][name] = {m: round(common.med(t) * 1000 / (size / 1e6), 2) for m, t in cpu.items()}
            print(name, "MB/s", res["mbps"][name], "daemon + emulators CPU ms/MB", res["cpu_ms_per_mb"][name], flush=True)
    common.write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
