"""The Python package as a user gets it: `python -m build` of a clean copy of the checkout gives an sdist and a wheel,
and each installs into a fresh venv and provides both commands, which then talk to each other.

Offline by design (CI and this box have no guaranteed index access for builds): the build runs with
`--no-isolation` from the dev venv (which has the build backend, see the dev extra), and the fresh venvs get the
runtime dependencies (msgpack, uvloop, pyghostty) through a .pth line naming the dev venv's site-packages, so
`pip install --no-deps --no-index` installs only our artefact. The dev venv's editable install is not visible there:
it is hooked in by a .pth file of its own, which a plain path line does not process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from vibest_pty.testing import Daemon

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 180  # seconds; a pip install takes ~2 s here, but the box is shared by many test runs


def _clean_copy(dest: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files: what a fresh clone (plus local edits) holds."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
        capture_output=True,
    ).stdout.decode().split("\0")
    for rel in files:
        if not rel or rel.startswith("sdk/"):
            continue  # the TypeScript SDK is packed and tested by its own suite
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the work tree but still in the index
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
    return dest


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tree = _clean_copy(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)],
        capture_output=True, text=True, timeout=PIP_TIMEOUT,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "tree": tree}


def _fresh_venv(where: Path) -> Path:
    """A venv of the base interpreter without our package; runtime deps come from the dev venv (see the docstring)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=PIP_TIMEOUT)
    py = where / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
        capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "_dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where


def _pip_install(venv: Path, artefact: Path, *extra: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--disable-pip-version-check", "--no-deps", "--no-index", *extra, str(artefact)],
        capture_output=True, text=True, timeout=PIP_TIMEOUT,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_PTY_")}
    env.pop("PYTHONPATH", None)  # the test must see the installed copy, never src/
    return env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vpp-", dir="/tmp"))  # AF_UNIX paths are limited to 107 bytes
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_wheel_holds_every_file_of_the_package(artefacts: dict[str, Path]) -> None:
    src = artefacts["tree"] / "src" / "vibest_pty"
    expected = {
        str(p.relative_to(src.parent)) for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    with zipfile.ZipFile(artefacts["wheel"]) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    missing = expected - names
    assert not missing, f"not in the wheel (add them to [tool.setuptools.package-data]): {sorted(missing)}"
    assert "vibest-pty-daemon = vibest_pty.server:main" in entry_points
    assert "vibest-pty = vibest_pty.cli:main" in entry_points
    with tarfile.open(artefacts["sdist"]) as t:
        sdist_names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    missing = {f"src/{n}" for n in expected} - sdist_names
    assert not missing, f"not in the sdist: {sorted(missing)}"


def _round_trip(venv: Path, work: Path) -> None:
    """The installed daemon serves the installed CLI: a session is created, prints, is read back and killed."""
    bin_ = venv / "bin"
    env = _env()
    for cmd in ("vibest-pty-daemon", "vibest-pty"):
        r = subprocess.run([str(bin_ / cmd), "--version"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "0.1.0" in r.stdout, (cmd, r.stdout, r.stderr)
    where = subprocess.run(
        [str(bin_ / "python"), "-c", "import vibest_pty; print(vibest_pty.__file__)"], env=env,
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"vibest_pty imported from {where}, not from the installed artefact"

    daemon = Daemon(str(work), command=[str(bin_ / "vibest-pty-daemon")])
    daemon.env = {**env, "RUST_PTY_SOCKET_PATH": daemon.socket}
    daemon.start()
    sock = daemon.socket
    try:
        cli = [str(bin_ / "vibest-pty"), "--socket", str(sock)]
        r = subprocess.run(
            [*cli, "new", "-d", "--", "/bin/sh", "-c", "echo packaged-$((6*7)); sleep 60"], env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        sid = r.stdout.split()[-1]
        deadline = time.monotonic() + 20
        screen = ""
        while "packaged-42" not in screen and time.monotonic() < deadline:
            screen = subprocess.run(
                [*cli, "snapshot", sid], env=env, capture_output=True, text=True, timeout=60
            ).stdout
            time.sleep(0.1)
        assert "packaged-42" in screen, screen
        r = subprocess.run([*cli, "kill", sid], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        rc = daemon.stop(timeout=30)
    assert rc == 0, daemon.log()


def test_wheel_installs_into_a_fresh_venv_and_its_commands_round_trip(
    artefacts: dict[str, Path], tmp_path: Path, short_dir: Path
) -> None:
    venv = _fresh_venv(tmp_path / "venv")
    _pip_install(venv, artefacts["wheel"])
    _round_trip(venv, short_dir)


def test_sdist_installs_into_a_fresh_venv_and_its_commands_round_trip(
    artefacts: dict[str, Path], tmp_path: Path, short_dir: Path
) -> None:
    venv = _fresh_venv(tmp_path / "venv")
    # --no-build-isolation: the sdist is built by the dev venv's setuptools (visible through the .pth line), offline.
    _pip_install(venv, artefacts["sdist"], "--no-build-isolation")
    _round_trip(venv, short_dir)
