"""Shell integration: the OSC 133 parser and tracker (pure), inject() (pure), and real bash/zsh/fish on a PTY."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vibest_pty.osc133 import (
    MAX_SEQUENCE,
    CommandEvent,
    Cwd,
    Mark,
    Osc133Parser,
    PasteMode,
    ShellTracker,
)
from vibest_pty.shell_integration import BASH_SCRIPT, ZSH_DIR, inject

NONCE = "f00dfeed12345678"


def mark(body: str, term: str = "\x07") -> bytes:
    return f"\x1b]133;{body}{term}".encode()


# ---------------------------------------------------------------- parser


def test_parser_finds_marks_with_offsets_and_decodes_the_command() -> None:
    p = Osc133Parser(NONCE)
    data = b"xx" + mark(f"C;aid={NONCE};cmdline_url=echo%20a%3Bb%0Ac") + b"out" + mark(f"D;3;aid={NONCE}")
    evs = p.feed(data)
    assert evs == [
        Mark(
            "C", 2, 2 + len(mark(f"C;aid={NONCE};cmdline_url=echo%20a%3Bb%0Ac")), None, "echo a;b\nc", NONCE
        ),
        Mark("D", len(data) - len(mark(f"D;3;aid={NONCE}")), len(data), 3, None, NONCE),
    ]


def test_a_mark_split_at_every_byte_boundary_still_counts() -> None:
    stream = (
        b"a\x1b[31mred\x1b]0;title\x07"
        + mark(f"A;aid={NONCE}")
        + b"$ "
        + mark(f"B;aid={NONCE}", "\x1b\\")
        + b"\x1b[?2004l"
        + b"\x1b]7;file://host/tmp/a%20b\x07"
        + mark(f"C;aid={NONCE};cmdline_url=ls")
        + b"out\r\n"
        + mark(f"D;0;aid={NONCE}")
    )
    whole = Osc133Parser(NONCE).feed(stream)
    assert [type(e).__name__ for e in whole] == ["Mark", "Mark", "PasteMode", "Cwd", "Mark", "Mark"]
    for cut in range(1, len(stream)):
        p = Osc133Parser(NONCE)
        assert p.feed(stream[:cut]) + p.feed(stream[cut:]) == whole, cut
    # and one byte at a time
    p = Osc133Parser(NONCE)
    assert [e for b in stream for e in p.feed(bytes([b]))] == whole


def test_marks_without_the_nonce_are_ignored_when_one_is_set() -> None:
    p = Osc133Parser(NONCE)
    assert p.feed(mark("D;0") + mark("D;0;aid=wrong") + mark("C;aid=f00d")) == []
    assert p.rejected == 3
    # no nonce (integration not injected): a program's own marks count
    assert [e.kind for e in Osc133Parser(None).feed(mark("A") + mark("D;0")) if isinstance(e, Mark)] == [
        "A",
        "D",
    ]


def test_an_unterminated_mark_is_bounded_and_skipped_to_its_end() -> None:
    p = Osc133Parser(NONCE)
    p.feed(b"\x1b]133;C;aid=" + NONCE.encode() + b";cmdline_url=")
    for _ in range(MAX_SEQUENCE // 4096 + 2):
        assert p.feed(b"x" * 4096) == []
        assert len(p._buf) <= MAX_SEQUENCE
    # the oversized mark's terminator ends the skip; the next mark counts
    evs = p.feed(b"xx\x07" + mark(f"D;1;aid={NONCE}"))
    assert [(e.kind, e.exit_code) for e in evs if isinstance(e, Mark)] == [("D", 1)]


def test_can_aborts_a_mark_and_another_escape_ends_it() -> None:
    p = Osc133Parser(NONCE)
    assert p.feed(f"\x1b]133;D;0;aid={NONCE}\x18".encode()) == []
    evs = p.feed(f"\x1b]133;D;2;aid={NONCE}\x1b[0m".encode())
    assert [(e.kind, e.exit_code) for e in evs if isinstance(e, Mark)] == [("D", 2)]


def test_osc7_and_bracketed_paste_are_reported() -> None:
    evs = Osc133Parser().feed(b"\x1b[?2004h\x1b]7;file://h/home/u/a%20b\x1b\\\x1b[?2004l")
    assert evs[0] == PasteMode(True, 8)
    assert isinstance(evs[1], Cwd) and evs[1].path == "/home/u/a b"
    assert isinstance(evs[2], PasteMode) and not evs[2].enabled


def test_tracker_reports_start_and_end_with_offsets_and_state() -> None:
    t = ShellTracker(NONCE, clock=lambda: 100.0)
    assert t.state == "unknown"
    t.feed(b"\x1b]7;file://h/tmp\x07" + mark(f"A;aid={NONCE}") + b"$ " + mark(f"B;aid={NONCE}"))
    assert (t.state, t.ready, t.cwd) == ("prompt", True, "/tmp")
    c = mark(f"C;aid={NONCE};cmdline_url=false")
    pos = t.parser.pos
    evs = t.feed(c + b"out" + mark(f"D;1;aid={NONCE}"))
    assert evs == [
        CommandEvent("start", 1, pos + len(c), "false", None, "/tmp"),
        CommandEvent("end", 1, pos + len(c) + 3, "false", 1, "/tmp"),
    ]
    assert t.info()["exit_code"] == 1 and t.state == "prompt"
    # a fake end printed by the command's output does not end it
    t.feed(mark(f"C;aid={NONCE};cmdline_url=cat"))
    assert t.feed(mark("D;0")) == [] and t.state == "running"
    # an end without a start is ignored
    t2 = ShellTracker(NONCE)
    assert t2.feed(mark(f"D;0;aid={NONCE}")) == []


# ---------------------------------------------------------------- inject()


def test_inject_rewrites_interactive_bash_and_leaves_other_programs_alone() -> None:
    env = {"HOME": "/home/u", "PATH": "/bin"}
    sp = inject(["/bin/bash", "-l", "--norc"], env, NONCE)
    assert sp.injected and sp.argv == ["/bin/bash", "--posix", "-l"]
    assert sp.env["ENV"] == str(BASH_SCRIPT) and sp.env["VIBEST_PTY_AID"] == NONCE
    assert " --norc " in sp.env["VIBEST_PTY_BASH_INJECT"]
    assert sp.env["HISTFILE"] == "/home/u/.bash_history"
    rc = inject(["bash", "--rcfile", "/x/rc"], {**env, "ENV": "/e", "HISTFILE": "/h"}, NONCE)
    assert rc.argv == ["bash", "--posix"] and rc.env["VIBEST_PTY_BASH_RCFILE"] == "/x/rc"
    assert rc.env["VIBEST_PTY_BASH_ENV"] == "/e" and "VIBEST_PTY_BASH_HISTFILE" not in rc.env
    for argv in (
        ["bash", "-c", "echo"],
        ["bash", "script.sh"],
        ["bash", "--posix"],
        ["vim"],
        ["zsh", "-f"],
        [],
    ):
        out = inject(argv, env, NONCE)
        assert not out.injected and out.argv == argv and out.env == env
    z = inject(["-zsh"], {**env, "ZDOTDIR": "/z"}, NONCE)
    assert z.env["ZDOTDIR"] == str(ZSH_DIR) and z.env["VIBEST_PTY_ZSH_ZDOTDIR"] == "/z"
    f = inject(["fish", "-l"], env, NONCE)
    assert f.injected and f.env["XDG_DATA_DIRS"].endswith(":/usr/local/share:/usr/share")


# ---------------------------------------------------------------- real shells on a real PTY


class ShellPty:
    """A shell on a PTY (its controlling terminal, so ^C works) with a tracker over everything it prints."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, nonce: str = NONCE) -> None:
        sp = inject(argv, env, nonce)
        self.spawn = sp
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x18\x00\x50\x00\x00\x00\x00\x00")  # 24 x 80

        def ctty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            sp.argv, env=sp.env, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, preexec_fn=ctty
        )
        os.close(slave)
        self.out = bytearray()
        self.tracker = ShellTracker(nonce)
        self.events: list[CommandEvent] = []

    def pump(self, timeout: float) -> None:
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            self.out += data
            self.events += self.tracker.feed(data)

    def wait(self, pred: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; last output: {bytes(self.out[-600:])!r}")
            self.pump(0.05)

    def ready(self) -> None:
        self.wait(lambda: self.tracker.ready)

    def run(self, line: bytes, timeout: float = 20.0) -> CommandEvent:
        self.ready()
        n = len([e for e in self.events if e.phase == "end"])
        os.write(self.master, line + b"\r")
        self.wait(lambda: len([e for e in self.events if e.phase == "end"]) > n, timeout)
        end = [e for e in self.events if e.phase == "end"][-1]
        self.wait(lambda: self.tracker.ready, timeout)
        return end

    def output_of(self, end: CommandEvent) -> bytes:
        start = next(e for e in self.events if e.phase == "start" and e.seq == end.seq)
        return bytes(self.out[start.offset : end.offset])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)


SHELLS = ["bash", "zsh", "fish"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def spawn(home: Path) -> Iterator[Callable[..., ShellPty]]:
    made: list[ShellPty] = []

    def make(argv: list[str], **extra: str) -> ShellPty:
        if shutil.which(argv[0]) is None:
            pytest.skip(f"{argv[0]} is not installed (scripts/system-deps.sh installs it)")
        env = {"HOME": str(home), "PATH": os.environ["PATH"], "TERM": "xterm-256color", "LANG": "C.UTF-8"}
        env.update(extra)
        s = ShellPty(argv, env, str(home))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("shell", SHELLS)
def test_real_shell_reports_commands_exit_codes_and_ctrl_c(
    shell: str, spawn: Callable[..., ShellPty]
) -> None:
    s = spawn([shell])
    assert s.spawn.injected
    ok = s.run(b"echo hello")
    assert (ok.command, ok.exit_code) == ("echo hello", 0)
    assert b"hello" in s.output_of(ok)
    assert s.run(b"sh -c 'exit 3'").exit_code == 3
    s.ready()
    os.write(s.master, b"sleep 30\r")
    s.wait(lambda: s.tracker.state == "running")
    time.sleep(0.2)  # let the shell hand the terminal to sleep before ^C
    os.write(s.master, b"\x03")
    s.wait(lambda: s.events[-1].phase == "end")
    assert s.events[-1].exit_code == 130
    fake = s.run(b"printf '\\033]133;D;0\\007\\033]133;D;0;aid=nope\\007'; sh -c 'exit 4'")
    assert fake.exit_code == 4
    assert s.tracker.parser.rejected >= 2
    assert s.tracker.cwd is not None and os.path.samefile(s.tracker.cwd, s.spawn.env["HOME"])


@pytest.mark.parametrize("shell", SHELLS)
def test_real_shell_reports_a_multiline_command_once(shell: str, spawn: Callable[..., ShellPty]) -> None:
    s = spawn([shell])
    s.ready()
    # bracketed paste (what `run` sends) keeps the newline inside one command line; zsh turns it on just
    # after the B mark
    s.wait(lambda: s.tracker.bracketed_paste)
    end = s.run(b"\x1b[200~echo one\necho two; false\x1b[201~")
    assert end.exit_code == 1
    assert end.command is not None and "echo one\necho two" in end.command
    assert b"one" in s.output_of(end) and b"two" in s.output_of(end)


def test_bash_keeps_the_users_prompt_command_and_prompt(spawn: Callable[..., ShellPty], home: Path) -> None:
    (home / ".bashrc").write_text(
        "PROMPT_COMMAND='echo -n \"[pc $?]\" >> ~/pc.log'\nPS1='mine> '\nalias ll='echo aliased'\n"
    )
    s = spawn(["bash"])
    end = s.run(b"ll; sh -c 'exit 5'")
    assert end.exit_code == 5
    assert b"aliased" in s.output_of(end)
    s.wait(lambda: b"mine> " in s.out[end.offset :])
    # the user's hook ran after ours and still saw the command's status
    s.wait(lambda: "[pc 5]" in (home / "pc.log").read_text())
    # the history file is bash's usual one, not POSIX mode's ~/.sh_history
    assert s.run(b"echo $HISTFILE").exit_code == 0
    assert str(home / ".bash_history").encode() in bytes(s.out)


def test_bash_norc_is_respected(spawn: Callable[..., ShellPty], home: Path) -> None:
    (home / ".bashrc").write_text("echo SHOULD-NOT-RUN\n")
    s = spawn(["bash", "--norc"])
    end = s.run(b"echo ok")
    assert end.exit_code == 0
    assert b"SHOULD-NOT-RUN" not in s.out


def test_bash_login_shell_reads_the_profile_not_bashrc(spawn: Callable[..., ShellPty], home: Path) -> None:
    (home / ".bash_profile").write_text("export FROM_PROFILE=yes\n")
    (home / ".bashrc").write_text("export FROM_RC=yes\n")
    s = spawn(["bash", "-l"])
    end = s.run(b"echo P=$FROM_PROFILE R=$FROM_RC; shopt -q login_shell && echo LOGIN")
    out = s.output_of(end)
    assert b"P=yes R=" in out and b"R=yes" not in out and b"LOGIN" in out


def test_zsh_sources_the_users_files_from_their_zdotdir(spawn: Callable[..., ShellPty], home: Path) -> None:
    zd = home / "zd"
    zd.mkdir()
    (zd / ".zshenv").write_text("export FROM_ENV=yes\n")
    (zd / ".zshrc").write_text("PS1='zmine> '\nprecmd() { print -n '' }\nexport RC_ZDOTDIR=$ZDOTDIR\n")
    s = spawn(["zsh", "-l"], ZDOTDIR=str(zd))
    end = s.run(b"echo E=$FROM_ENV Z=$ZDOTDIR R=$RC_ZDOTDIR; exit_three() { return 3 }; exit_three")
    assert end.exit_code == 3
    out = s.output_of(end)
    assert f"E=yes Z={zd} R={zd}".encode() in out
    assert b"zmine> " in s.out


def test_fish_restores_xdg_data_dirs_and_keeps_the_users_prompt(
    spawn: Callable[..., ShellPty], home: Path
) -> None:
    conf = home / ".config" / "fish"
    conf.mkdir(parents=True)
    (conf / "config.fish").write_text("function fish_prompt; printf 'fmine> '; end\n")
    s = spawn(["fish"], XDG_DATA_DIRS="/opt/x:/usr/share")
    end = s.run(b"echo X=$XDG_DATA_DIRS; false")
    assert end.exit_code == 1
    assert b"X=/opt/x /usr/share" in s.output_of(end) or b"X=/opt/x:/usr/share" in s.output_of(end)
    assert b"fmine> " in s.out
