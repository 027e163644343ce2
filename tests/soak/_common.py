"""Shared set-up for the soak scripts: import the suite's helpers whatever the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.conftest import Daemon  # noqa: E402


def start_daemon(env: dict[str, str] | None = None) -> Daemon:
    d = Daemon(tempfile.mkdtemp(prefix="vp-soak-"), env)
    d.env["RUST_PTY_LOG_LEVEL"] = os.environ.get("VP_SOAK_LOG_LEVEL", "info")
    return d.start()


def stop_daemon(d: Daemon, failed: bool = False) -> int:
    rc = d.stop()
    if failed or os.environ.get("VP_SOAK_KEEP"):
        print(f"daemon log kept in {d.log_path}")
    else:
        subprocess.run(["rm", "-rf", d.dir], check=False)
    return rc
