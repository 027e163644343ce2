"""Rerun the CI reliability tests many times with bigger knobs, to shake out rare races and flaky bounds.

    .venv/bin/python tests/soak/soak_repeat.py --rounds 10 -k "flood or sigkill or vanish"

Knobs passed to tests/test_reliability.py through the environment (CI defaults in brackets):
VP_FUZZ_EXAMPLES [300], VP_LEAK_CYCLES [500], VP_FLOOD_BYTES [16000000]. This script sets them to
--fuzz-examples, --leak-cycles and --flood-bytes. Prints a pass/fail count per round and the failures' output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _common import ROOT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-k", default="", help="pytest -k expression (default: the whole file)")
    ap.add_argument("--fuzz-examples", type=int, default=3000)
    ap.add_argument("--leak-cycles", type=int, default=3000)
    ap.add_argument("--flood-bytes", type=int, default=40_000_000)
    args = ap.parse_args()
    env = {**os.environ, "VP_FUZZ_EXAMPLES": str(args.fuzz_examples), "VP_LEAK_CYCLES": str(args.leak_cycles),
           "VP_FLOOD_BYTES": str(args.flood_bytes)}
    cmd = [sys.executable, "-m", "pytest", "tests/test_reliability.py", "-q", "-s", "-p", "no:cacheprovider"]
    if args.k:
        cmd += ["-k", args.k]
    failed = 0
    for r in range(args.rounds):
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "(no output)"
        figures = [ln for ln in p.stdout.splitlines() if "echo latency" in ln or ": {'cycles'" in ln
                   or ln.startswith("fuzz:")]
        print(f"round {r}: {summary} ({time.monotonic() - t0:.0f} s)", flush=True)
        for ln in figures:
            print("   ", ln.lstrip(".x"), flush=True)
        if p.returncode != 0:
            failed += 1
            print(p.stdout[-6000:], p.stderr[-2000:], sep="\n")
    print(f"soak_repeat: {args.rounds - failed}/{args.rounds} rounds passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
