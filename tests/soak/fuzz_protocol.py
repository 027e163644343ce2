"""Long protocol fuzzing against one live daemon: the CI test's hypothesis generators, run for a wall-clock budget.

    .venv/bin/python tests/soak/fuzz_protocol.py --seconds 300

Each round runs --batch hypothesis examples (fresh random seed; a failure is shrunk and printed with the
@reproduce_failure blob), then checks the echo session on a second connection. Prints the case count.
Exit status 0 when every case got its documented reply and the daemon stayed up with a clean log.
"""

from __future__ import annotations

import argparse
import time

from _common import start_daemon, stop_daemon
from tests.test_reliability import FUZZ_ENV, FuzzTarget, run_fuzz


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="wall-clock budget (default 180)")
    ap.add_argument("--batch", type=int, default=2000, help="hypothesis examples per round (default 2000)")
    args = ap.parse_args()
    d = start_daemon(FUZZ_ENV)
    target = FuzzTarget(d)
    t0 = time.monotonic()
    rounds = 0
    failed = True
    try:
        while time.monotonic() - t0 < args.seconds:
            run_fuzz(target, args.batch)
            rounds += 1
            rate = target.count / (time.monotonic() - t0)
            print(f"round {rounds}: {target.count} cases, {rate:.0f}/s, echo ok, daemon up", flush=True)
        target.finish()
        failed = False
    finally:
        rc = stop_daemon(d, failed)
    print(f"fuzz_protocol: {target.count} cases in {time.monotonic() - t0:.0f} s, daemon exit {rc}: PASS")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
