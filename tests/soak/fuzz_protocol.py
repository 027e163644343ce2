"""Long protocol fuzzing against one live daemon: the CI test's hypothesis generators, run for a wall-clock budget.

    .venv/bin/python tests/soak/fuzz_protocol.py --seconds 300

Each round runs --batch hypothesis examples (fresh random seed; a failure is shrunk and printed with the
@reproduce_failure blob), then checks the echo session on a second connection. Prints the case count.
Between rounds, --large-seconds of *large* shapes (tests/test_protocol_limits.py `large_shapes`: nested arrays of up
to 16 MiB) go to a second daemon with the default 16 MiB frame limit (the first runs with 256 KiB) over a raw connection: each must get `ok` when within the decoding limits,
`bad_message` otherwise, within a second, with the connection still usable.
Exit status 0 when every case got its documented reply and the daemon stayed up with a clean log.
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from _common import start_daemon, stop_daemon
from tests.conftest import Daemon
from tests.test_protocol_limits import LEAVES, large_shape
from tests.test_reliability import FUZZ_ENV, FuzzTarget, run_fuzz

MIB = 1024 * 1024


def run_large(d: Daemon, seconds: float) -> int:
    """Large shapes for `seconds`; returns the count."""
    s = d.raw(timeout=30)
    count = 0
    t_end = time.monotonic() + seconds
    rng = random.Random()
    try:
        while time.monotonic() < t_end:
            width = rng.choice([rng.randint(1, 70000), 15, 16, 17, 4096, 4097])
            shape = large_shape(width, rng.randint(0, 6), rng.choice(sorted(LEAVES)), 16 * MIB - 64)
            if shape is None:
                continue
            payload, within = shape
            t0 = time.monotonic()
            s.send_bytes(struct.pack(">I", len(payload)) + payload)
            reply = s.next_message()
            elapsed = time.monotonic() - t0
            want = "ok" if within else "error"
            assert reply["type"] == want and (within or reply["code"] == "bad_message"), (len(payload), reply)
            assert elapsed < 1.0 + len(payload) / (20 * MIB), (len(payload), elapsed)  # sending takes time too
            count += 1
    finally:
        s.close()
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="wall-clock budget (default 180)")
    ap.add_argument("--batch", type=int, default=2000, help="hypothesis examples per round (default 2000)")
    ap.add_argument("--large-seconds", type=float, default=10.0, help="large shapes per round (default 10 s)")
    args = ap.parse_args()
    d = start_daemon(FUZZ_ENV)
    big = start_daemon()
    target = FuzzTarget(d)
    t0 = time.monotonic()
    rounds = 0
    failed = True
    try:
        while time.monotonic() - t0 < args.seconds:
            run_fuzz(target, args.batch)
            large = run_large(big, args.large_seconds)
            rounds += 1
            rate = target.count / (time.monotonic() - t0)
            print(f"round {rounds}: {target.count} cases, {rate:.0f}/s, {large} large shapes, echo ok, daemon up",
                  flush=True)
        target.finish()
        failed = False
    finally:
        rcs = [stop_daemon(d, failed), stop_daemon(big, failed)]
        rc = max(rcs)
    print(f"fuzz_protocol: {target.count} cases in {time.monotonic() - t0:.0f} s, daemon exit {rc}: PASS")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
