"""Profile the daemon with py-spy while it serves a benchmark workload; prints where its active time goes.

    .venv/bin/pip install py-spy          # once; a profiling tool, not a project dependency
    .venv/bin/python bench/profile_daemon.py [--scenario throughput|isolation] [--workload plain] [--size-mb 50]

throughput: the daemon path of bench_throughput.py (one attached client) on one workload, repeated for
            `--seconds`. isolation: a session flooding `yes` to a client that never reads while another session
            echoes keys. Output: top functions by self time and by inclusive time (share of the daemon's active,
            non-idle samples); the collapsed stacks are kept in bench/results/profile-*.txt (for flamegraph.pl or
            speedscope.app). echo: keystroke round trips as in bench_echo.py, nothing else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_throughput
import common
import workloads
from bench_echo import CMD, daemon_echo_loop

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def pyspy() -> str:
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if not exe:
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    return exe


def summarize(raw_path: str, top: int = 20) -> str:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n_s = line.rstrip().rpartition(" ")
            n = int(n_s)
            total += n
            frames = stack.split(";")
            self_c[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    out = [f"{total} active samples", "", "self time:"]
    out += [f"  {n / total:6.1%}  {fn}" for fn, n in self_c.most_common(top)]
    out += ["", "inclusive time (vibest_pty and extension frames):"]
    out += [f"  {n / total:6.1%}  {fn}" for fn, n in incl.most_common(200)
            if "vibest_pty" in fn or "pyghostty" in fn or "msgpack" in fn][:top]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=["throughput", "isolation", "echo"], default="throughput")
    ap.add_argument("--workload", default="plain", choices=list(workloads.WORKLOADS))
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--native", action="store_true", help="py-spy --native (C/Zig frames of the extensions)")
    args = ap.parse_args()
    exe = pyspy()
    os.makedirs(RESULTS, exist_ok=True)
    tag = f"{args.scenario}-{args.workload}" if args.scenario == "throughput" else args.scenario
    raw = os.path.join(RESULTS, f"profile-{tag}.txt")
    work = tempfile.mkdtemp(prefix="vpb-prof-")
    try:
        with common.new_daemon() as d:
            extra = ["--native"] if args.native else []
            rec = [exe, "record", "-p", str(d.pid), "-r", "250", "-d", str(int(args.seconds) + 1), *extra]
            prof_raw = subprocess.Popen([*rec, "-f", "raw", "-o", raw], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            t_end = time.time() + args.seconds
            if args.scenario == "throughput":
                _, cols, rows = workloads.WORKLOADS[args.workload]
                path = os.path.join(work, "w.bin")
                n = workloads.write_file(args.workload, int(args.size_mb * 1e6), path)
                runs = []
                while time.time() < t_end:
                    runs.append(bench_throughput.run_daemon(d, path, cols, rows))
                print(f"{args.workload}: {len(runs)} runs, median {n / common.med(runs) / 1e6:.1f} MB/s "
                      "(slowed by the sampling)")
            elif args.scenario == "echo":
                b = common.client(d)
                sid = b.create(shell="/bin/sh", args=["-c", CMD], attach=True)["id"]
                while time.time() < t_end:
                    daemon_echo_loop(b, sid, 200)
                b.close()
            else:
                b = common.client(d)
                sid = b.create(shell="/bin/sh", args=["-c", CMD], attach=True)["id"]
                a = common.client(d, rcvbuf=4096)
                a.send({"type": "create", "id": 1, "options": {"shell": "yes", "attach": True}})
                while time.time() < t_end:
                    daemon_echo_loop(b, sid, 200)
                a.close()
                b.close()
            prof_raw.wait()
        print(summarize(raw))
        print(f"\ncollapsed stacks: {raw}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
