"""The `vibest-pty` command: parsing and formatting as units, the plain commands as subprocesses against a real
daemon, and `attach` for real inside a private tmux server (keys in with send-keys, the screen out with
capture-pane, always polled against a deadline rather than slept on)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vibest_pty import cli
from vibest_pty.cli import daemon as cli_daemon

from .conftest import Daemon

BIN = Path(sys.executable).parent
CLI = [str(BIN / "vibest-pty")] if (BIN / "vibest-pty").exists() else [sys.executable, "-m", "vibest_pty.cli"]


# ---------------------------------------------------------------------------------------------------------
# Units: argument parsing, escapes, formatting, mode tracking


def test_parse_key() -> None:
    assert cli.parse_key("^\\") == 0x1C
    assert cli.parse_key("^]") == 0x1D
    assert cli.parse_key("^a") == cli.parse_key("ctrl-a") == cli.parse_key("C-A") == 0x01
    assert cli.parse_key("^?") == 0x7F
    assert cli.parse_key("q") == ord("q")
    assert cli.parse_key("none") is None
    for bad in ("^1", "ctrl-alt-x", "xy", "é"):
        with pytest.raises(Exception, match="bad key"):
            cli.parse_key(bad)


def test_find_key() -> None:
    assert cli.find_key(b"ab\x1ccd", 0x1C) == 2
    assert cli.find_key(b"ab\x1b[92;5ucd\x1c", 0x1C) == 2  # kitty keyboard protocol
    assert cli.find_key(b"a\x1b[27;5;93~", 0x1D) == 1  # modifyOtherKeys, ^]
    assert cli.find_key(b"a\x1b[97;5:1u", 0x01) == 1  # ^A with an event type
    assert cli.find_key(b"abc", 0x1C) == -1
    assert cli.find_key(b"\x1c", None) == -1


def test_unescape() -> None:
    assert cli.unescape(r"ls -l\n") == b"ls -l\n"
    assert cli.unescape(r"\x03\e[A\r\t\\n") == b"\x03\x1b[A\r\t\\n"
    assert cli.unescape(r"\u00e9\0\177") == "é".encode() + b"\x00\x7f"
    assert cli.unescape("naïve ✓") == "naïve ✓".encode()
    with pytest.raises(cli.CliError, match="unknown escape"):
        cli.unescape(r"\q")


def test_parse_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUST_PTY_SOCKET_PATH", "/tmp/env.sock")
    a = cli.parse_args(["new", "-d", "--name", "w", "--env", "A=1", "-e", "B=x=y", "--tag", "wt=3", "--",
                        "vim", "-u", "NONE", "--", "f"])
    assert (a.command, a.detached, a.name, a.socket) == ("new", True, "w", "/tmp/env.sock")
    assert a.env == [("A", "1"), ("B", "x=y")] and a.tag == [("wt", "3")]
    assert a.cmd == ["vim", "-u", "NONE", "--", "f"]
    assert cli.parse_args(["new"]).cmd == []
    assert cli.parse_args(["new"]).detach_key == 0x1C
    # --socket before or after the command
    assert cli.parse_args(["--socket", "/a", "ls"]).socket == "/a"
    assert cli.parse_args(["ls", "--socket", "/b", "--json"]).socket == "/b"
    assert cli.parse_args(["list"]).command == "list"
    a = cli.parse_args(["attach", "build", "--detach-key", "^]"])
    assert (a.session, a.detach_key) == ("build", 0x1D)
    assert cli.parse_args(["send", "3", "--stdin"]).stdin
    assert cli.parse_args(["snapshot", "3"]).format == "text"
    assert cli.parse_args(["signal", "3", "INT"]).signal == "INT"


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["attach"], ["new", "--env", "NOEQUALS"], ["new", "--detach-key", "^^^"],
     ["send", "3"], ["send", "3", "x", "--stdin"], ["snapshot", "3", "--format", "html"], ["signal", "3"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2
    assert "vibest-pty" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "vibest-pty attach" in out and "vibest-pty-daemon" in out


def _info(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1, "pid": 100, "command": ["bash"], "name": "", "tags": {}, "cwd": "/home/u/src", "title": "",
        "cols": 80, "rows": 24, "created_at": 1000.0, "last_attached_at": None, "running": True,
        "exit_code": None, "exit_signal": None, "clients": 0,
    }
    return base | kw


def test_format_table() -> None:
    sessions = [
        _info(id=12, name="build", command=["sh", "-c", "make -j8 && echo done"], cwd="/srv/x", created_at=1000 - 7200,
              running=False, exit_code=2),
        _info(id=3, clients=2, cols=120, rows=40),
        _info(id=4, running=False, exit_signal=9, command=["x" * 60], cwd="/home/u/" + "d" * 60),
    ]
    out = cli.format_table(sessions, now=1090.0, home="/home/u").splitlines()
    assert out[0].split() == ["ID", "NAME", "PID", "COMMAND", "CWD", "SIZE", "CLIENTS", "STATE", "AGE"]
    assert [ln.split()[0] for ln in out[1:]] == ["3", "4", "12"]  # sorted by id
    assert out[1].split() == ["3", "100", "bash", "~/src", "120x40", "2", "running", "1m"]
    assert "exited SIGKILL" in out[2] and "…" in out[2] and "exited 2" in out[3]
    assert "'make -j8 && echo done'" in out[3] and out[3].endswith("2h")
    # columns line up
    col = out[0].index("STATE")
    assert all(ln[col:].split()[0] in ("STATE", "running", "exited") for ln in out)


def test_format_helpers() -> None:
    assert [cli.format_age(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3)] == ["0s", "59s", "1m", "59m", "1h", "3d"]
    assert cli.format_state(_info()) == "running"
    assert cli.format_state(_info(running=False, exit_code=0)) == "exited 0"
    assert cli.format_state(_info(running=False, exit_signal=15)) == "exited SIGTERM"
    stats = {"uptime": 65.0, "connections": 2, "sessions": 3, "running": 1, "bytes_in": 10, "bytes_out": 4096,
             "rss": 30 << 20, "queues": [{"session": 1, "connection": 2, "events": 0, "bytes": 0, "level": "green"}]}
    out = cli.format_stats(stats)
    assert "3 (1 running)" in out and "4.0 KiB" in out and "30.0 MiB" in out and "green" in out


def _state(m: cli.ModeTracker) -> tuple[int | None, bool]:
    return m.alt, m.origin


def test_mode_tracker() -> None:
    m = cli.ModeTracker()
    m.feed(b"abc\x1b[?10")
    m.feed(b"49h\x1b[?6h")
    assert _state(m) == (1049, True)
    seq = m.restore_sequence()
    assert seq.startswith(b"\x1b[?1049l\x1b[?6l") and b"\x1b[?25h" in seq and b"\x1b[?2004l" in seq
    m.feed(b"\x1b[?1049l\x1b[?1;47h")
    assert _state(m) == (47, True)
    m.feed(b"\x1bc")
    assert _state(m) == (None, False)
    assert not m.restore_sequence().startswith(b"\x1b[?1049l")


def test_snapshot_text_renders_through_the_emulator() -> None:
    data = b"\x1b]2;title\x1b\\\x1b[1;31mred\x1b[0m text\r\nline2   \r\n\r\n\x1b[3;1H\x1b(B"
    assert cli.snapshot_text({"data": data, "cols": 20, "rows": 5}) == "red text\nline2\n"
    alt = b"shell\r\n\x1b[?1049h\x1b[Hvim screen\r\n~"
    assert cli.snapshot_text({"data": alt, "cols": 20, "rows": 5}) == "vim screen\n~\n"
    assert cli.snapshot_text({"data": b"", "cols": 20, "rows": 5}) == ""
    # screen only: the last `rows` rows, a soft-wrapped line joined; with scrollback, the history above it
    history = b"old1\r\nold2\r\n" + b"w" * 15 + b"\r\nlast\r\n\x1b[3;5H"
    snap = {"data": history, "cols": 10, "rows": 4, "scrollback_lines": 10}
    assert cli.snapshot_text(snap) == "w" * 15 + "\nlast\n"
    assert cli.snapshot_text(snap, scrollback=True).startswith("old1\nold2\n" + "w" * 15)


class _FakeClient:
    def __init__(self) -> None:
        self.resyncs: list[int] = []

    def on(self, event: str, fn: Callable[[dict[str, Any]], None]) -> None:
        pass

    async def resync(self, sid: int) -> None:
        self.resyncs.append(sid)


async def test_attachment_paints_output_repaints_on_resync_and_exits_with_the_signal() -> None:
    """Output is written as the client delivers it (the client trims it, tests/test_client.py); a resync
    repaints (leaving the alternate screen the old picture was on); a signal exit becomes 128 + signal."""
    r, w = os.pipe()
    try:
        att = cli.Attachment(_FakeClient(), 0x1C, in_fd=-1, out_fd=w)  # type: ignore[arg-type]
        att.sid = 5
        att._paint({"data": b"SNAP\x1b[?1049h", "offset": 10, "modes": {}})
        att._ready = True
        for ev in [
            {"type": "output", "session": 5, "offset": 10, "data": b"NEW"},
            {"type": "output", "session": 6, "offset": 13, "data": b"other"},  # another session
            {"type": "output", "session": 5, "offset": 13, "data": b"\x1b[?100"},
            {"type": "output", "session": 5, "offset": 21, "data": b"2h"},
            {"type": "resync", "session": 5, "snapshot": {"data": b"FRESH", "offset": 100}},
            {"type": "output", "session": 5, "offset": 100, "data": b"!"},
            {"type": "exit", "session": 5, "code": None, "signal": 15},
        ]:
            att._on_event(ev)
        assert att._outcome.result() == ("exit", 143)
        out = os.read(r, 65536)
    finally:
        os.close(r)
        os.close(w)
    assert out.index(b"SNAP") < out.index(b"NEW") < out.index(b"\x1b[?1049l") < out.index(b"FRESH")
    assert out.endswith(b"FRESH!")
    assert b"other" not in out
    assert _state(att.modes) == (None, False)


async def test_attachment_far_behind_asks_the_client_for_a_resync_and_drops_output_until_it_comes() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    fake = _FakeClient()
    try:
        att = cli.Attachment(fake, 0x1C, in_fd=-1, out_fd=w)  # type: ignore[arg-type]
        att.sid = 5
        att._ready = True
        chunk = b"y" * 65536
        for i in range(80):  # 5 MiB into a pipe nobody reads: past the 4 MiB backlog bound
            att._on_event({"type": "output", "session": 5, "offset": i * len(chunk), "data": chunk})
        await asyncio.sleep(0)
        assert fake.resyncs == [5] and att._repainting
        att._on_event({"type": "resync", "session": 5, "snapshot": {"data": b"FRESH", "offset": 1 << 23}})
        assert not att._repainting
        att._writer.close()
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------------------------------------
# Plain commands against a real daemon


def run_cli(daemon: Daemon | None, *args: str, input: bytes | None = None, socket: str | None = None,
            timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """The installed `vibest-pty` command as a subprocess."""
    env = dict(os.environ)
    env["RUST_PTY_SOCKET_PATH"] = socket or (daemon.socket if daemon else "/nonexistent/socket")
    return subprocess.run(
        [*CLI, *args], env=env, input=input.decode() if input is not None else None, capture_output=True,
        text=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
    )


def cli_main(daemon: Daemon, *args: str, input: bytes = b"") -> subprocess.CompletedProcess[str]:
    """cli.main in this process (a Python start-up per call is slow on a busy machine), with --socket."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    err = io.StringIO()
    stdin = io.TextIOWrapper(io.BytesIO(input), encoding="utf-8")
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, out, err
    try:
        code = cli.main(["--socket", daemon.socket, *args])
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    out.flush()
    return subprocess.CompletedProcess(list(args), code, out.buffer.getvalue().decode(), err.getvalue())


def wait_until(fn: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def sessions_json(daemon: Daemon) -> list[dict[str, Any]]:
    r = cli_main(daemon, "ls", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_no_start_reports_a_missing_daemon_and_starts_none(tmpdir_short: str) -> None:
    sock = os.path.join(tmpdir_short, "vp", "socket")
    r = run_cli(None, "--no-start", "ls", socket=sock)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert "daemon not running" in r.stderr and "vibest-pty daemon start" in r.stderr
    assert not os.path.exists(os.path.dirname(sock))


def test_commands(daemon: Daemon, tmp_path: Path) -> None:
    r = run_cli(daemon, "ls")  # the installed command
    assert r.returncode == 0 and r.stdout == "" and "no sessions" in r.stderr
    r = cli_main(daemon, "new", "-d", "--name", "sh1", "--cwd", str(tmp_path), "--env", "GREETING=hi there",
                "--tag", "wt=7", "--", "sh")
    assert r.returncode == 0, r.stderr
    sid = int(r.stdout)
    # not a terminal: `new` without -d refuses before creating anything
    r = cli_main(daemon, "new", "--", "sh")
    assert r.returncode == 1 and "terminal" in r.stderr
    [info] = sessions_json(daemon)
    assert (info["id"], info["name"], info["tags"], info["command"]) == (sid, "sh1", {"wt": "7"}, ["sh"])
    assert info["cwd"] == str(tmp_path) and info["running"]

    r = cli_main(daemon, "send", "sh1", r'echo "$GREETING-$((6*7))"\n')
    assert r.returncode == 0, r.stderr
    r = cli_main(daemon, "send", str(sid), "--stdin", input=b"echo from-stdin\n")
    assert r.returncode == 0, r.stderr

    def screen() -> str:
        r = cli_main(daemon, "snapshot", str(sid))
        assert r.returncode == 0, r.stderr
        return r.stdout

    text = wait_until(lambda: (s := screen()) and "from-stdin\n" in s and s, what="both outputs")
    assert "hi there-42" in text and "\x1b" not in text
    r = run_cli(daemon, "snapshot", "sh1", "--format", "ansi")
    assert r.returncode == 0 and "hi there-42" in r.stdout

    table = cli_main(daemon, "ls").stdout.splitlines()
    assert table[0].startswith("ID") and table[1].split()[:4] == [str(sid), "sh1", str(info["pid"]), "sh"]
    assert "running" in table[1]

    # a long-running foreground job gets the signal, the shell survives
    cli_main(daemon, "send", "sh1", r"sleep 30; echo after-sleep\n")
    time.sleep(0.3)
    r = cli_main(daemon, "signal", "sh1", "INT")
    assert r.returncode == 0, r.stderr
    r = cli_main(daemon, "signal", "sh1", "NOPE")
    assert r.returncode == 2 and "signal" in r.stderr and "NOPE" in r.stderr

    # errors: unknown session, ambiguous name
    for cmd in (["kill", "99"], ["send", "nosuch", "x"], ["snapshot", "42"], ["attach", "x"]):
        r = cli_main(daemon, *cmd)
        assert r.returncode == 1, cmd
        assert r.stderr.count("\n") == 1, r.stderr
    assert "no such session (no session 99)" in cli_main(daemon, "kill", "99").stderr
    assert "no session 'nosuch'" in cli_main(daemon, "kill", "nosuch").stderr
    cli_main(daemon, "new", "-d", "--name", "sh1", "--", "sh")
    r = cli_main(daemon, "kill", "sh1")
    assert r.returncode == 1 and "2 sessions are named 'sh1'" in r.stderr

    r = cli_main(daemon, "kill", str(sid))
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not [s for s in sessions_json(daemon) if s["id"] == sid and s["running"]], what="exit")
    assert "exited SIGHUP" in cli_main(daemon, "ls").stdout
    r = cli_main(daemon, "kill", str(sid))  # exited: removes the record
    assert r.returncode == 0
    assert sid not in [s["id"] for s in sessions_json(daemon)]

    r = cli_main(daemon, "stats")
    assert r.returncode == 0 and "uptime" in r.stdout and "running" in r.stdout
    st = json.loads(cli_main(daemon, "stats", "--json").stdout)
    assert st["running"] == 1 and "type" not in st


# ---------------------------------------------------------------------------------------------------------
# attach, for real, in tmux


class Tmux:
    """A private tmux server (its own socket) with one 100x30 window running a plain bash."""

    def __init__(self, directory: str, env: dict[str, str]) -> None:
        self.socket = os.path.join(directory, "tmux.sock")
        self.env = env
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", "-s", "t",
                  "env PS1='outer$ ' bash --norc --noprofile")

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args], env=self.env,
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def cursor(self) -> tuple[int, int]:
        x, y = self.tmux("display-message", "-p", "-t", "t", "#{cursor_x},#{cursor_y}").split(",")
        return int(x), int(y)

    FLAGS = ("alternate_on", "mouse_any_flag", "mouse_button_flag", "mouse_standard_flag", "mouse_sgr_flag",
             "cursor_flag", "keypad_cursor_flag", "keypad_flag", "origin_flag", "insert_flag", "wrap_flag")

    def flags(self) -> dict[str, int]:
        """The pane's terminal modes as tmux sees them (what the attach has left the user's terminal in)."""
        out = self.tmux("display-message", "-p", "-t", "t", "|".join(f"#{{{f}}}" for f in self.FLAGS))
        return {f: int(v or 0) for f, v in zip(self.FLAGS, out.strip().split("|"), strict=True)}

    def wait(self, what: str | Callable[[str], bool], timeout: float = 15.0) -> str:
        """The screen once it contains `what` (or satisfies it)."""
        check = what if callable(what) else (lambda s: what in s)
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if check(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what!r}; screen:\n{s}")
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env, capture_output=True, timeout=10)


@pytest.fixture
def tmux(daemon: Daemon) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/tmp"),
        "TERM": "xterm-256color", "LANG": "C.UTF-8", "PS1": "outer$ ", "HISTFILE": "/dev/null",
        "RUST_PTY_SOCKET_PATH": daemon.socket, "TMUX_TMPDIR": daemon.dir,
    }
    t = Tmux(daemon.dir, env)
    try:
        t.wait("outer$")
        yield t
    finally:
        t.kill()


# The prompt is expanded by bash, so waiting for "in42>" does not match the command line that set it.
INNER = "--env 'PS1=in$((40+2))> ' --env HISTFILE=/dev/null -- bash --norc --noprofile"


def _fullscreen_app(tmp: str) -> tuple[str, Callable[[Tmux], None], str]:
    """A full-screen program on the alternate screen: vim if installed, else a small curses script.

    Returns the command, a function that types some text into it, and that text."""
    if shutil.which("vim"):
        def edit(t: Tmux) -> None:
            t.type("ihello from vim", enter=False)
            t.keys("Escape")
        return f"vim -u NONE -N -i NONE -c 'set mouse=a' {tmp}/file.txt", edit, "hello from vim"
    script = Path(tmp) / "app.py"
    script.write_text(
        "import curses\n"
        "def main(w):\n"
        "    w.addstr(0, 0, 'curses app'); w.refresh()\n"
        "    s = ''\n"
        "    while (c := w.getch()) != 27:\n"
        "        s += chr(c); w.addstr(1, 0, s); w.refresh()\n"
        "    w.getch()\n"
        "curses.wrapper(main)\n"
    )

    def type_(t: Tmux) -> None:
        t.type("hello from curses", enter=False)
        t.keys("Escape")
    return f"{shlex.quote(sys.executable)} {script}", type_, "hello from curses"


CLEAN = {"alternate_on": 0, "mouse_any_flag": 0, "mouse_button_flag": 0, "mouse_standard_flag": 0,
         "mouse_sgr_flag": 0, "cursor_flag": 1, "keypad_cursor_flag": 0, "keypad_flag": 0, "origin_flag": 0,
         "insert_flag": 0, "wrap_flag": 1}


def test_attach_detach_reattach_resize_exit(tmux: Tmux, daemon: Daemon) -> None:
    stty = os.path.join(daemon.dir, "stty")
    tmux.type(f"stty -g > {stty}; clear")
    tmux.wait(lambda s: "stty" not in s)
    assert tmux.flags() == CLEAN
    tmux.type(f"vibest-pty new --name demo {INNER}; echo \"new-rc=$?\"")
    tmux.wait("in42>")
    [info] = sessions_json(daemon)
    sid = info["id"]
    assert (info["cols"], info["rows"], info["clients"]) == (100, 30, 1)  # sized to the terminal

    # keystrokes in, output out
    tmux.type("echo hello-$((6*7))")
    tmux.wait("hello-42")

    # a full-screen app on the alternate screen
    cmd, edit, text = _fullscreen_app(daemon.dir)
    tmux.type(cmd)
    tmux.wait(lambda s: s.count("~") > 10 if "vim" in cmd else "curses app" in s)
    edit(tmux)
    # vim leaves insert mode once its escape timeout passes; wait until the screen settles
    before = tmux.wait(lambda s: text in s and "INSERT" not in s)
    before_cursor = tmux.cursor()
    in_app = tmux.flags()
    if "vim" in cmd:
        assert in_app["alternate_on"] and in_app["mouse_sgr_flag"] and in_app["keypad_cursor_flag"], in_app

    # detach: the terminal comes back (alternate screen left), the command says why and exits 0
    tmux.keys("C-\\")
    after = tmux.wait("new-rc=0")
    assert f"[detached from session {sid} (demo)]" in after
    assert text not in after and "hello-42" in after  # back on the normal screen
    # ... and restored exactly: termios settings and every mode the app had set
    assert tmux.flags() == CLEAN
    tmux.type(f'[ "$(stty -g)" = "$(cat {stty})" ] && echo "stty-same"')
    tmux.wait("stty-same\n")
    wait_until(lambda: sessions_json(daemon)[0]["clients"] == 0, what="clients == 0")
    tmux.type("clear")
    tmux.wait(lambda s: "hello-42" not in s)

    # reattach: the same screen, cursor included
    tmux.type('vibest-pty attach demo; echo "attach-rc=$?"')
    tmux.wait(lambda s: s == before)
    assert tmux.cursor() == before_cursor
    assert tmux.flags() == in_app  # the snapshot brought the app's modes back too
    assert sessions_json(daemon)[0]["clients"] == 1

    # the session follows the terminal's size
    tmux.tmux("resize-window", "-t", "t", "-x", "120", "-y", "40")
    wait_until(lambda: (lambda s: (s["cols"], s["rows"]) == (120, 40))(sessions_json(daemon)[0]), what="resize")
    if "vim" in cmd:
        tmux.wait(lambda s: len(s.splitlines()) == 40 and text in s)

    # leave the app, exit the shell with 7: attach exits 7 too
    if "vim" in cmd:
        tmux.type(":q!")
    else:
        tmux.keys("x")
    tmux.wait(lambda s: text not in s and "in42>" in s)
    tmux.type("exit 7")
    out = tmux.wait("attach-rc=7")
    assert f"[session {sid} (demo) exited with code 7]" in out
    assert tmux.flags() == CLEAN
    assert not sessions_json(daemon)[0]["running"]


def test_new_with_command_signal_exit_and_detach_key(tmux: Tmux, daemon: Daemon) -> None:
    # a custom detach key; Ctrl-\ then goes to the program like any other key
    tmux.type(f"vibest-pty new --detach-key '^]' --name k {INNER}; echo \"rc1=$?\"")
    tmux.wait("in42>")
    tmux.keys("C-\\")
    tmux.type("echo still-here")
    tmux.wait("still-here\n")
    tmux.keys("C-]")
    tmux.wait("rc1=0")
    # a program killed by a signal: 128 + signal, like a shell
    tmux.type("vibest-pty new -- sh -c 'echo started; kill -9 $$'; echo \"rc2=$?\"")
    out = tmux.wait(lambda s: re.search(r"rc2=\d", s) is not None)
    assert "rc2=137" in out and "exited on signal SIGKILL]" in out
    # attaching an unknown session: one line, exit 1, the terminal untouched
    tmux.type("vibest-pty attach nosuch; echo \"rc3=$?\"")
    out = tmux.wait(lambda s: re.search(r"rc3=\d", s) is not None)
    assert "rc3=1" in out and "vibest-pty: no session 'nosuch'" in out
    # detach in the middle of a flood: prompt, and nothing of the flood after the message
    tmux.type(f"clear; vibest-pty new --name flood {INNER}; echo \"rc5=$?\"")
    tmux.wait("in42>")
    tmux.type("yes flood-flood-flood")
    tmux.wait("flood-flood-flood\nflood-flood-flood\n")
    tmux.keys("C-\\")
    out = tmux.wait(lambda s: re.search(r"rc5=\d", s) is not None, timeout=10)
    tail = [ln for ln in out.splitlines() if ln.strip()][-3:]
    [sid] = [s["id"] for s in sessions_json(daemon) if s["name"] == "flood"]
    assert tail[0].endswith(f"[detached from session {sid} (flood)]") and tail[1:] == ["rc5=0", "outer$"], tail
    assert cli_main(daemon, "kill", "flood").returncode == 0
    # the daemon stops under an attached client: it says so and exits 1
    tmux.type(f"clear; vibest-pty new {INNER}; echo \"rc4=$?\"")
    tmux.wait("in42>")
    daemon.stop()
    out = tmux.wait(lambda s: re.search(r"rc4=\d", s) is not None)
    assert "rc4=1" in out and "[the daemon is shutting down" in out
    assert tmux.flags() == CLEAN


# ---------------------------------------------------------------------------------------------------------
# Escape injection: nothing a session chose reaches the user's terminal raw

_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but the newline
OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # "put `rm -rf ~` on the clipboard"


def test_escape_shows_c0_del_and_c1_as_hex_and_leaves_text_alone() -> None:
    assert cli.escape(OSC52) == "\\x1b]52;c;cm0gLXJmIH4=\\x07"
    assert cli.escape("a\x9b31mb\x7f\x00\n\t") == "a\\x9b31mb\\x7f\\x00\\x0a\\x09"
    assert cli.escape("naïve ✓ ~/src") == "naïve ✓ ~/src"


def test_format_table_escapes_every_session_string() -> None:
    hostile = _info(name=f"n{OSC52}", cwd=f"/tmp/{OSC52}", command=["sh", "-c", f"echo {OSC52}"],
                    title=OSC52, cols="80\x1b[2J", pid="1\x9d")
    out = cli.format_table([hostile], now=1000.0, home="/home/u")
    assert not _RAW_CONTROL.search(out), repr(out)
    assert "\\x1b]52" in out
    stats = cli.format_stats({"queues": [{"session": 1, "connection": 2, "events": 0, "level": OSC52}]})
    assert not _RAW_CONTROL.search(stats)


def test_ls_errors_and_snapshot_print_hostile_names_cwds_and_titles_escaped(
        daemon: Daemon, tmpdir_short: str) -> None:
    # A directory whose name holds an OSC 52, and a session that prints an OSC 52 inside a percent-encoded
    # OSC 7 path (as a `cat` of a file would) and a title with C1 controls.
    evil_dir = os.path.join(tmpdir_short, f"d{OSC52}")
    os.mkdir(evil_dir)
    r = cli_main(daemon, "new", "-d", "--name", f"x{OSC52}", "--cwd", evil_dir, "--", "sh")
    assert r.returncode == 0, r.stderr
    osc7 = r"\033]7;file://h/tmp/%%1b]52;c;cm0gLXJmIH4=%%07\007\033]2;t\302\2332J\007"
    r = cli_main(daemon, "new", "-d", "--name", "osc7", "--", "sh", "-c", f"printf '{osc7}'; exec sleep 60")
    assert r.returncode == 0, r.stderr
    sid = int(r.stdout)
    # The title comes after the OSC 7 in the output: once it is in, the cwd has been seen too.
    wait_until(lambda: any(s["id"] == sid and s["title"] for s in sessions_json(daemon)), what="the title")
    r = run_cli(daemon, "ls")  # the installed command, its real stdout
    assert r.returncode == 0, r.stderr
    assert not _RAW_CONTROL.search(r.stdout), repr(r.stdout)
    assert "x\\x1b]52;c;" in r.stdout  # the name, shown escaped
    # --json escapes controls as \u001b (and C1 as \u009b)
    assert not _RAW_CONTROL.search(run_cli(daemon, "ls", "--json").stdout)
    # errors quote what they were given
    for argv in (["kill", f"no{OSC52}"], ["new", "-d", "--cwd", f"/nonexistent/{OSC52}", "--", "sh"]):
        r = cli_main(daemon, *argv)
        assert r.returncode in (1, 2) and not _RAW_CONTROL.search(r.stderr[:-1]), repr(r.stderr)
        assert "\\x1b]52" in r.stderr
    snap = cli_main(daemon, "snapshot", str(sid))
    assert snap.returncode == 0 and not _RAW_CONTROL.search(snap.stdout)
    # The daemon itself: an OSC 7 path with control characters is not taken as the cwd, and the title loses
    # its C1 controls (U+009B here, which some terminals read as CSI).
    [osc] = [s for s in sessions_json(daemon) if s["id"] == sid]
    assert not osc["cwd"].startswith("/tmp/\x1b") and osc["title"] == "t2J", osc


def test_prune_removes_exited_records_only(daemon: Daemon) -> None:
    live = int(cli_main(daemon, "new", "-d", "--", "sh").stdout)
    done = [int(cli_main(daemon, "new", "-d", "--", "true").stdout) for _ in range(2)]
    wait_until(lambda: all(not s["running"] for s in sessions_json(daemon) if s["id"] in done), what="exits")
    r = cli_main(daemon, "prune", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(r.stdout)) == done
    assert [s["id"] for s in sessions_json(daemon)] == [live]
    r = cli_main(daemon, "prune")
    assert r.returncode == 0 and "no exited sessions" in r.stderr


@pytest.mark.parametrize("argv", [["signal", "1", "FOO"], ["signal", "1", "999"], ["attach", "1", "--timeout", "x"],
                                  ["daemon", "restart"], ["new", "-d", "--cwd", "/nonexistent", "--", "sh"]])
def test_bad_arguments_exit_2_everywhere(daemon: Daemon, argv: list[str]) -> None:
    r = cli_main(daemon, *argv)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------------------------------------------------------
# The daemon on demand: started by the first command that needs it, stopped by `daemon stop`


def _lock_pid(sock: str) -> int:
    try:
        return int(Path(sock + ".lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def test_a_command_starts_the_daemon_in_the_background_and_daemon_stop_ends_it(tmpdir_short: str) -> None:
    sock = os.path.join(tmpdir_short, "auto", "socket")
    try:
        r = run_cli(None, "daemon", "status", socket=sock)
        assert r.returncode == 1 and "not running" in r.stdout
        r = run_cli(None, "new", "-d", "--", "sh", socket=sock, timeout=60)  # no daemon yet: one is started
        assert r.returncode == 0, r.stderr
        sid = int(r.stdout)
        pid = _lock_pid(sock)
        assert pid > 0 and os.path.exists(os.path.join(tmpdir_short, "auto", "daemon.log"))
        # it outlives the command that started it, in its own session (no terminal to hang it up)
        assert os.getsid(pid) == pid
        r = run_cli(None, "ls", "--json", socket=sock)
        assert r.returncode == 0 and [s["id"] for s in json.loads(r.stdout)] == [sid]
        r = run_cli(None, "daemon", "status", socket=sock)
        assert r.returncode == 0 and f"pid {pid}" in r.stdout and "1 sessions (1 running)" in r.stdout
        r = run_cli(None, "daemon", "start", socket=sock)
        assert r.returncode == 0 and "already running" in r.stdout and _lock_pid(sock) == pid
        r = run_cli(None, "daemon", "stop", socket=sock, timeout=60)
        assert r.returncode == 0 and f"stopped the daemon (pid {pid})" in r.stdout, r.stderr
        assert not os.path.exists(sock)
        assert cli_daemon._gone(pid)  # no such process, or a zombie whose reaper (not us) has yet to run
        r = run_cli(None, "daemon", "stop", socket=sock)
        assert r.returncode == 0 and "not running" in r.stdout
        r = run_cli(None, "daemon", "start", socket=sock, timeout=60)
        assert r.returncode == 0 and "started the daemon" in r.stdout, r.stderr
    finally:
        run_cli(None, "daemon", "stop", socket=sock, timeout=60)
        pid = _lock_pid(sock)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_daemon_that_cannot_start_is_reported_with_its_log(tmpdir_short: str) -> None:
    parent = os.path.join(tmpdir_short, "open")
    os.mkdir(parent)
    os.chmod(parent, 0o777)  # the daemon refuses a socket directory others can write to
    r = run_cli(None, "ls", socket=os.path.join(parent, "socket"), timeout=60)
    assert r.returncode == 1
    assert "exited with status" in r.stderr and "writable by group or others" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------------------------
# attach while the daemon is slow to answer: keys stay live, and it gives up by itself

SILENT_SERVER = """
import asyncio, os, sys
from vibest_pty import protocol

async def serve(reader, writer):
    dec = protocol.FrameDecoder()
    while data := await reader.read(65536):
        dec.feed(data)
        for m in dec.messages():
            if m.get("type") == "hello":  # answers hello, and never the attach (a snapshot that takes forever)
                writer.write(protocol.encode(protocol.ok(m["id"], protocol=1, version="0", pid=os.getpid(),
                                                          features=[])))

async def main():
    server = await asyncio.start_unix_server(serve, sys.argv[1])
    print("listening", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def test_attach_waiting_for_a_silent_daemon_gives_up_on_the_detach_key_ctrl_c_or_its_timeout(
        tmux: Tmux, tmpdir_short: str) -> None:
    sock = os.path.join(tmpdir_short, "silent.sock")
    proc = subprocess.Popen([sys.executable, "-c", SILENT_SERVER, sock], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        for n, key in enumerate(["C-\\", "C-c"]):
            t0 = time.monotonic()
            tmux.type(f"clear; vibest-pty --socket {sock} attach 1; echo \"rc{n}=$?\"")
            time.sleep(0.5)
            tmux.keys(key)
            out = tmux.wait(lambda s, n=n: re.search(rf"rc{n}=\d", s) is not None)
            assert f"rc{n}=1" in out and "[gave up waiting for the daemon to attach session 1]" in out, out
            assert time.monotonic() - t0 < 10  # not the 30 s timeout
            assert tmux.flags() == CLEAN
        tmux.type(f"clear; vibest-pty --socket {sock} attach 1 --timeout 1.5; echo \"rc2=$?\"")
        out = tmux.wait(lambda s: re.search(r"rc2=\d", s) is not None, timeout=20)
        assert "rc2=1" in out and "did not answer within 1.5 s" in out, out
        assert tmux.flags() == CLEAN
    finally:
        proc.kill()
        proc.wait()


LIST_FAILS_SERVER = """
import asyncio, os, sys
from vibest_pty import protocol

async def serve(reader, writer):
    dec = protocol.FrameDecoder()
    while data := await reader.read(65536):
        dec.feed(data)
        for m in dec.messages():
            t, rid = m.get("type"), m.get("id")
            with open(sys.argv[1] + ".log", "a") as f:
                f.write(f"{t} {m.get('session')}\\n")
            if t == "list":  # as with huge tags: the list reply cannot be built
                reply = protocol.error(rid, "limit_reached", "the reply would exceed the frame limit", t)
            elif t == "hello":
                reply = protocol.ok(rid, protocol=1, version="0", pid=os.getpid(), features=[])
            else:
                reply = protocol.ok(rid)
            if rid is not None:
                writer.write(protocol.encode(reply))

async def main():
    server = await asyncio.start_unix_server(serve, sys.argv[1])
    print("listening", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def test_kill_signal_and_send_by_id_do_not_need_the_session_list(tmpdir_short: str) -> None:
    sock = os.path.join(tmpdir_short, "nolist.sock")
    proc = subprocess.Popen([sys.executable, "-c", LIST_FAILS_SERVER, sock], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        fake = Daemon(tmpdir_short)
        fake.socket = sock
        for argv in (["kill", "3"], ["signal", "3", "INT"], ["send", "3", "x"]):
            r = cli_main(fake, *argv)
            assert r.returncode == 0, (argv, r.stderr)
        requests = Path(sock + ".log").read_text().split("\n")
        assert "list None" not in requests and {"kill 3", "signal 3", "input 3"} <= set(requests)
        r = cli_main(fake, "kill", "build")  # a name needs the list: its failure is reported
        assert r.returncode == 1 and "frame limit" in r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_commands_racing_to_start_the_daemon_share_one(tmpdir_short: str) -> None:
    sock = os.path.join(tmpdir_short, "race", "socket")
    env = {**os.environ, "RUST_PTY_SOCKET_PATH": sock}
    try:
        procs = [subprocess.Popen([*CLI, "ls", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [(p.wait(60), *p.communicate()) for p in procs]
        assert all(code == 0 and out.strip() == "[]" for code, out, _ in results), results
        r = run_cli(None, "daemon", "status", socket=sock)
        assert r.returncode == 0 and f"pid {_lock_pid(sock)}" in r.stdout
    finally:
        run_cli(None, "daemon", "stop", socket=sock, timeout=60)


def test_new_kill_after_detach_kills_a_session_nobody_attaches(daemon: Daemon) -> None:
    sid = int(cli_main(daemon, "new", "-d", "--kill-after-detach", "0.5", "--", "sh").stdout)
    kept = int(cli_main(daemon, "new", "-d", "--", "sh").stdout)
    wait_until(lambda: not any(s["id"] == sid and s["running"] for s in sessions_json(daemon)), what="the kill")
    assert any(s["id"] == kept and s["running"] for s in sessions_json(daemon))
    assert cli_main(daemon, "new", "-d", "--kill-after-detach", "-1", "--", "sh").returncode == 2
