"""Run every benchmark and print the table: `.venv/bin/python bench/run.py [--quick] [--only a,b] [--skip a,b]`.

Results go to bench/results/<UTC time>.json and bench/results/latest.json (gitignored); the table (markdown) goes
to stdout and bench/results/latest.md. Benchmarks: throughput, echo, attach, resources (idle + memory), isolation,
spawn (start-up + spawn under a large heap), scale. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_attach
import bench_echo
import bench_isolation
import bench_resources
import bench_scale
import bench_spawn
import bench_throughput
import bench_upgrade
import common

BENCHES: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "throughput": bench_throughput.main,
    "echo": bench_echo.main,
    "attach": bench_attach.main,
    "resources": bench_resources.main,
    "isolation": bench_isolation.main,
    "spawn": bench_spawn.main,
    "scale": bench_scale.main,
    "upgrade": bench_upgrade.main,
}


def _ok(cond: bool) -> str:
    return "met" if cond else "MISSED"


def table(r: dict[str, Any]) -> str:
    """Markdown table of the figures (ratios first) and the targets."""
    out = [f"Run {r['date']} ({'quick' if r['quick'] else 'default sizes'}), {r['machine']}", ""]
    if "throughput" in r:
        out += ["### Throughput (MB/s, median of runs; ratios from the same run)", "",
                "| workload | raw PTY | daemon | tmux (attached) | tmux (detached) | daemon/raw | daemon/tmux | "
                "tmux/raw | target |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, w in r["throughput"]["workloads"].items():
            m = w["mbps"]
            tgt = []
            if "daemon_vs_tmux" in w:
                tgt.append(f">=2x tmux {_ok(w['daemon_vs_tmux'] >= 2)}")
            if name == "plain" and "daemon_vs_raw" in w:
                tgt.append(f">=0.6x raw {_ok(w['daemon_vs_raw'] >= 0.6)}")
            out.append(f"| {name} ({w['cols']}x{w['rows']}, {w['bytes'] / 1e6:.0f} MB) | {m.get('raw', 0):.1f} | "
                       f"{m['daemon']:.1f} | {m.get('tmux', 0):.1f} | {m.get('tmux_detached', 0):.1f} | "
                       f"{w.get('daemon_vs_raw', float('nan')):.2f} | {w.get('daemon_vs_tmux', float('nan')):.2f} | "
                       f"{w.get('tmux_vs_raw', float('nan')):.2f} | {'; '.join(tgt)} |")
        out.append("")
    if "echo" in r:
        e = r["echo"]
        out += ["### Keystroke echo round trip (ms; median over runs of p50/p99)", "",
                "| path | p50 | p99 |", "| --- | --- | --- |"]
        for k in ("direct", "daemon", "tmux"):
            if k in e:
                out.append(f"| {k} | {e[k]['p50_ms']:.3f} | {e[k]['p99_ms']:.3f} |")
        line = f"daemon p50 / direct p50 = {e['daemon_p50_vs_direct']:.1f}x"
        if "daemon_p50_vs_tmux" in e:
            line += (f"; daemon/tmux: p50 {e['daemon_p50_vs_tmux']:.2f}x, p99 {e['daemon_p99_vs_tmux']:.2f}x. "
                     f"Target p50 <= tmux: {_ok(e['daemon_p50_vs_tmux'] <= 1)}")
        line += f"; target p99 < 1 ms: {_ok(e['daemon']['p99_ms'] < 1)}"
        out += ["", line, ""]
    if "attach" in r:
        a = r["attach"]
        d = a["daemon"]
        line = (f"### Attach with 10,000 lines of history\n\nfirst attach {d.get('first_ms', float('nan')):.1f} ms; "
                f"then p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, "
                f"snapshot {d['snapshot_bytes'] / 1e6:.2f} MB ({d['scrollback_lines']} lines), frame "
                f"{d['frame_bytes'] / 1e6:.2f} MB.")
        if "tmux_capture" in a:
            t = a["tmux_capture"]
            line += (f" Reference tmux `capture-pane -e -S -10000`: p50 {t['p50_ms']:.2f} ms, {t['bytes'] / 1e6:.2f} MB"
                     f" (daemon/tmux {a['daemon_p50_vs_tmux_capture']:.2f}x).")
        out += [line, ""]
    if "resources" in r:
        res = r["resources"]
        out += ["### Idle cost (100 idle sessions, one attached client)", "",
                "| server | CPU s | wake-ups | over |", "| --- | --- | --- | --- |"]
        for k, v in res["idle"].items():
            out.append(f"| {k} | {v['cpu_s']:.3f} | {v['wakeups']} | {v['seconds']:.0f} s |")
        d = res["idle"]["daemon"]
        out += ["", f"Target ~0 CPU, no periodic wake-ups: {_ok(d['cpu_s'] < 0.05 and d['wakeups'] <= 2)}", "",
                "### Memory (RSS, MB; 10,000-line history)", "",
                "| server | empty | per idle session | per 10k-line session |", "| --- | --- | --- | --- |"]
        for k in ("daemon", "tmux"):
            if k in res["memory"]:
                m = res["memory"][k]
                out.append(f"| {k} | {m['empty_mb']:.1f} | {m['per_idle_session_mb']:.3f} | "
                           f"{m['per_full_session_mb']:.2f} |")
        if "ratios_daemon_vs_tmux" in res["memory"]:
            q = res["memory"]["ratios_daemon_vs_tmux"]
            out.append(f"| daemon/tmux | {q['empty_mb']:.1f}x | {q['per_idle_session_mb']:.1f}x | "
                       f"{q['per_full_session_mb']:.2f}x |")
        out.append("")
    if "isolation" in r:
        i = r["isolation"]
        out += ["### Isolation (echo in one session while another floods `yes` to a client that never reads)", "",
                "| echo path | p50 quiet | p50 flood | p99 quiet | p99 flood |", "| --- | --- | --- | --- | --- |",
                f"| daemon | {i['baseline']['p50_ms']:.3f} | {i['flood']['p50_ms']:.3f} | "
                f"{i['baseline']['p99_ms']:.3f} | {i['flood']['p99_ms']:.3f} |"]
        if "flood_direct" in i:
            out.append(f"| direct PTY (control) | {i['baseline_direct']['p50_ms']:.3f} | "
                       f"{i['flood_direct']['p50_ms']:.3f} | {i['baseline_direct']['p99_ms']:.3f} | "
                       f"{i['flood_direct']['p99_ms']:.3f} |")
        out += ["", f"Flood read at {i['flood_mbps']:.1f} MB/s, daemon CPU {i['daemon_cpu_share']:.0%}. "
                f"p99 under flood < 1 ms: {_ok(i['flood']['p99_ms'] < 1)}", ""]
    if "upgrade" in r:
        out += ["### In-place upgrade (issue #14)", "",
                f"Floor (`python -c 'import asyncio, uvloop, msgpack, logging'`, same run): "
                f"{r['upgrade']['floor_ms']:.0f} ms.", "",
                "| sessions | client-seen gap p50 / max | x floor | daemon pause p50 | target | RSS MB before/after | fds |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, target in (("one", 50), ("many", 300)):
            u = r["upgrade"][name]
            out.append(f"| {u['sessions']} x {u['lines']} lines | {u['gap_ms']['p50']:.0f} / {u['gap_ms']['max']:.0f} ms "
                       f"| {u['gap_ms']['p50'] / r['upgrade']['floor_ms']:.2f} | {u['pause_ms']['p50']:.0f} ms | < {target} ms {_ok(u['gap_ms']['p50'] < target)} "
                       f"| {u['rss_mb'][0]:.1f} / {u['rss_mb'][1]:.1f} | {u['fds'][0]} / {u['fds'][1]} |")
        out.append("")
    if "spawn" in r:
        s = r["spawn"]
        st, sp = s["startup"], s["spawn"]
        out += ["### Start-up and spawn", "",
                f"Start-up to first hello: {st['p50_ms']:.0f} ms (bare `python -c pass`: {st['python_bare_ms']:.0f} ms,"
                f" {st['ratio_vs_bare_python']:.1f}x).", "",
                "| daemon heap | RSS MB | create p50 ms | create p99 ms |", "| --- | --- | --- | --- |",
                f"| empty | {sp['empty']['rss_mb']:.0f} | {sp['empty']['p50_ms']:.2f} | {sp['empty']['p99_ms']:.2f} |",
                f"| large | {sp['big_heap']['rss_mb']:.0f} | {sp['big_heap']['p50_ms']:.2f} | "
                f"{sp['big_heap']['p99_ms']:.2f} |",
                f"| ratio | | {sp['p50_ratio']:.2f}x | {sp['p99_ratio']:.2f}x |", ""]
    if "scale" in r:
        s = r["scale"]
        cr, rs = s["create"], s["rss"]
        out += [f"### Scale ({s['sessions']} sessions, {s['clients']} clients)", "",
                f"Create: {cr['total_s']:.2f} s total, p50 {cr['p50_ms']:.2f} ms, p99 {cr['p99_ms']:.2f} ms "
                f"(first/last 100: p50 {cr['first100_p50_ms']:.2f}/{cr['last100_p50_ms']:.2f} ms). "
                f"RSS {rs['empty_mb']:.0f} -> {rs['with_sessions_mb']:.0f} MB ({rs['per_session_mb'] * 1024:.0f} KiB/"
                f"session), {rs['with_clients_mb']:.0f} MB with the clients attached.", "",
                "| echo | p50 ms | p99 ms |", "| --- | --- | --- |",
                f"| empty daemon | {s['echo_empty']['p50_ms']:.3f} | {s['echo_empty']['p99_ms']:.3f} |",
                f"| loaded | {s['echo_loaded']['p50_ms']:.3f} | {s['echo_loaded']['p99_ms']:.3f} |", "",
                f"Loaded/empty p99: {s['echo_p99_ratio']:.1f}x; p99 < 1 ms under load: "
                f"{_ok(s['echo_loaded']['p99_ms'] < 1)}", ""]
    if r.get("errors"):
        out += ["### Errors", ""] + [f"- {k}: {v.splitlines()[-1]}" for k, v in r["errors"].items()] + [""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="run the vibest-pty benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--skip", help="comma-separated benchmarks to skip")
    ap.add_argument("--no-tmux", action="store_true")
    args = ap.parse_args()
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n not in (args.skip or "").split(",")]
    common.ensure_tmux()
    results_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(results_dir, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    r: dict[str, Any] = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
                         "machine": common.machine_note(), "load_avg_start": os.getloadavg(), "durations_s": {},
                         "errors": {}}
    for name in names:
        argv = ["--quick"] if args.quick else []
        if args.no_tmux and name in ("throughput", "echo", "attach", "resources"):
            argv.append("--no-tmux")
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            r[name] = BENCHES[name](argv)
        except Exception:
            r["errors"][name] = traceback.format_exc()
            print(r["errors"][name], file=sys.stderr, flush=True)
        r["durations_s"][name] = time.perf_counter() - t0
    r["load_avg_end"] = os.getloadavg()
    md = table(r)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for fn in (f"{stamp}.json", "latest.json"):
        with open(os.path.join(results_dir, fn), "w") as f:
            json.dump(r, f, indent=1)
    with open(os.path.join(results_dir, "latest.md"), "w") as f:
        f.write(md + "\n")
    print()
    print(md)
    print(f"total {sum(r['durations_s'].values()):.0f} s; results in {results_dir}/latest.json")


if __name__ == "__main__":
    main()
