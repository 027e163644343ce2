"""Shell integration: make bash, zsh and fish emit OSC 133 marks (and OSC 7 cwd) without touching user files.

`inject(argv, env, nonce)` returns the argv/env to spawn. For an interactive bash, zsh or fish it points the
shell at a startup file of ours that first does what the shell would have done (the user's own startup files,
under the same login/interactive/--norc rules) and then adds hooks that print the marks, each carrying
`aid=<nonce>`; for anything else (other programs, `bash -c`, a script, options we do not model) argv and env
come back unchanged and `injected` is false. The approach is the one ghostty, kitty and VS Code use:

- bash: `bash --posix` with `ENV` set to our file (an interactive POSIX-mode bash reads `$ENV` and nothing
  else); the file leaves POSIX mode and replays bash's startup rules (flags passed in `VIBEST_PTY_BASH_INJECT`).
- zsh: `ZDOTDIR` set to our directory; its `.zshenv`/`.zprofile`/`.zshrc`/`.zlogin` source the user's files
  (with the user's `ZDOTDIR` restored while they run) and install the hooks after `.zshrc`.
- fish: our directory first in `XDG_DATA_DIRS`, so fish loads our `vendor_conf.d` script (fish 3 has no
  marks of its own; fish 4's native, nonce-less marks are then ignored in favour of ours).

The nonce reaches the shell in `VIBEST_PTY_AID`, which the scripts unset at once (programs started from the
shell do not inherit it). It guards against marks printed by output (`cat` of a file, a web page), not
against a hostile process of the same user, which could read the shell's memory anyway.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DIR = Path(__file__).resolve().parent
BASH_SCRIPT = DIR / "bash" / "vibest-pty.bash"
ZSH_DIR = DIR / "zsh"
# fish appends "/fish" to each XDG_DATA_DIRS entry: DIR/fish/vendor_conf.d/ is where it looks.
FISH_DATA_DIR = DIR

# The XDG base-directory spec's default when XDG_DATA_DIRS is unset; we must keep it searchable when we set it.
XDG_DATA_DIRS_DEFAULT = "/usr/local/share:/usr/share"

AID_ENV = "VIBEST_PTY_AID"


@dataclass(frozen=True, slots=True)
class Spawn:
    argv: list[str]
    env: dict[str, str]
    injected: bool
    shell: str | None  # "bash" | "zsh" | "fish" when injected


def shell_name(argv0: str) -> str:
    """`/usr/bin/bash`, `-bash` (a login shell by argv[0]) and `bash` are all `bash`."""
    return os.path.basename(argv0).lstrip("-")


def inject(argv: Sequence[str], env: Mapping[str, str], nonce: str) -> Spawn:
    if not argv:
        return Spawn(list(argv), dict(env), False, None)
    name = shell_name(argv[0])
    result: Spawn | None = None
    if name == "bash":
        result = _bash(argv, env, nonce)
    elif name == "zsh":
        result = _zsh(argv, env, nonce)
    elif name == "fish":
        result = _fish(argv, env, nonce)
    return result or Spawn(list(argv), dict(env), False, None)


def _bash(argv: Sequence[str], env: Mapping[str, str], nonce: str) -> Spawn | None:
    # Only the options of an interactive shell that we can replay; -c, a script, --posix, -O... are left alone.
    long_opts: list[str] = []
    short: list[str] = []
    flags: list[str] = []
    rcfile: str | None = None
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--login", "--noediting", "--noprofile", "--norc"):
            if a in ("--noprofile", "--norc"):
                flags.append(a)
            else:
                long_opts.append(a)
        elif a in ("--rcfile", "--init-file"):
            if i + 1 >= len(args):
                return None
            rcfile = args[i + 1]
            i += 1
        elif a.startswith("-") and len(a) > 1 and not a.startswith("--") and set(a[1:]) <= {"i", "l"}:
            short.append(a)
        else:
            return None
        i += 1
    out = dict(env)
    if "ENV" in env:
        out["VIBEST_PTY_BASH_ENV"] = env["ENV"]
    out["ENV"] = str(BASH_SCRIPT)
    # Spaces around each flag so the script can match " --norc " exactly.
    out["VIBEST_PTY_BASH_INJECT"] = " " + " ".join(flags) + " "
    if rcfile is not None:
        out["VIBEST_PTY_BASH_RCFILE"] = rcfile
    if "HISTFILE" not in env and "HOME" in env:
        # POSIX mode would default to ~/.sh_history; keep bash's usual file (the script unexports it again).
        out["HISTFILE"] = os.path.join(env["HOME"], ".bash_history")
        out["VIBEST_PTY_BASH_HISTFILE"] = "1"
    out[AID_ENV] = nonce
    # Long options must precede single-letter ones for bash.
    return Spawn([argv[0], "--posix", *long_opts, *short], out, True, "bash")


def _zsh(argv: Sequence[str], env: Mapping[str, str], nonce: str) -> Spawn | None:
    allowed = {"-l", "--login", "-i", "--interactive", "-il", "-li"}
    if any(a not in allowed for a in argv[1:]):
        return None
    out = dict(env)
    if "ZDOTDIR" in env:
        out["VIBEST_PTY_ZSH_ZDOTDIR"] = env["ZDOTDIR"]
    out["ZDOTDIR"] = str(ZSH_DIR)
    out[AID_ENV] = nonce
    return Spawn(list(argv), out, True, "zsh")


def _fish(argv: Sequence[str], env: Mapping[str, str], nonce: str) -> Spawn | None:
    allowed = {"-l", "--login", "-i", "--interactive", "-il", "-li"}
    if any(a not in allowed for a in argv[1:]):
        return None
    out = dict(env)
    if "XDG_DATA_DIRS" in env:
        out["VIBEST_PTY_FISH_XDG_DATA_DIRS"] = env["XDG_DATA_DIRS"]
    out["XDG_DATA_DIRS"] = str(FISH_DATA_DIR) + ":" + env.get("XDG_DATA_DIRS", XDG_DATA_DIRS_DEFAULT)
    out[AID_ENV] = nonce
    return Spawn(list(argv), out, True, "fish")
