"""Smoke run of every benchmark script with tiny sizes: they must run to the end and report sane figures. Not a
performance test (no thresholds); see bench/README.md for the real runs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

HAVE_TMUX = shutil.which("tmux") is not None
RESULTS: dict[str, Any] = {}  # filled by each test, rendered by the last


def _tmux(argv: list[str]) -> list[str]:
    return argv if HAVE_TMUX else [*argv, "--no-tmux"]


def test_throughput() -> None:
    import bench_throughput

    r: dict[str, Any] = bench_throughput.main(_tmux(["--size-mb", "0.2", "--runs", "1", "--workloads", "plain"]))
    RESULTS["throughput"] = r
    w = r["workloads"]["plain"]
    assert w["mbps"]["daemon"] > 0
    if HAVE_TMUX:
        assert w["mbps"]["tmux"] > 0
    r2 = bench_throughput.main(["--size-mb", "0.1", "--runs", "1", "--workloads", "sgr,repaint80,repaint200,utf8", "--no-tmux"])
    assert set(r2["workloads"]) == {"sgr", "repaint80", "repaint200", "utf8"}


def test_echo() -> None:
    import bench_echo

    r = bench_echo.main(_tmux(["--keys", "30", "--runs", "1"]))
    RESULTS["echo"] = r
    assert r["daemon"]["p50_ms"] > 0 and r["direct"]["p50_ms"] > 0


def test_attach() -> None:
    import bench_attach

    r = bench_attach.main(["--n", "2", "--no-tmux"])
    RESULTS["attach"] = r
    assert r["daemon"]["scrollback_lines"] >= 9000
    assert r["daemon"]["snapshot_bytes"] > 100_000


def test_resources() -> None:
    import bench_resources

    r = bench_resources.main(_tmux(["--idle-s", "0.3", "--idle-sessions", "3", "--idle-n", "2", "--full-n", "1"]))
    RESULTS["resources"] = r
    assert r["idle"]["daemon"]["cpu_s"] >= 0
    assert r["memory"]["daemon"]["empty_mb"] > 0


def test_isolation() -> None:
    import bench_isolation

    r = bench_isolation.main(["--keys", "30"])
    RESULTS["isolation"] = r
    assert r["flood"]["p50_ms"] > 0 and r["flood_mbps"] > 0


def test_spawn() -> None:
    import bench_spawn

    r = bench_spawn.main(["--starts", "1", "--n", "3", "--heap-mb", "1"])
    RESULTS["spawn"] = r
    assert r["startup"]["p50_ms"] > 0 and r["spawn"]["empty"]["p50_ms"] > 0


def test_scale() -> None:
    import bench_scale

    r = bench_scale.main(["--sessions", "10", "--clients", "3", "--keys", "30"])
    RESULTS["scale"] = r
    assert r["create"]["total_s"] > 0 and r["echo_loaded"]["p50_ms"] > 0


def test_run_table() -> None:
    """The markdown table renders from the figures gathered above."""
    import run

    RESULTS.update(date="today", quick=True, machine="test", errors={})
    md = run.table(RESULTS)
    for section in ("Throughput", "echo", "Attach", "Idle", "Memory", "Isolation", "spawn", "Scale"):
        assert section in md
