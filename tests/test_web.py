"""`vibest-pty web`: the real server process, a real daemon and the real page in Debian's Chromium (Playwright for
Python drives it through `executable_path`; no browser is ever downloaded). Pure helpers get unit tests first."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Daemon, read_until
from vibest_pty import protocol
from vibest_pty.client import Client
from vibest_pty.web import server as web

CHROMIUM = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
ARTIFACTS = Path(os.environ.get("VP_ARTIFACTS", ROOT / "tests" / "artifacts"))
PROMPT = "vp-web$ "


# -- pure helpers ----------------------------------------------------------------------------------------------


def test_listen_address_forms_are_parsed() -> None:
    assert web.parse_listen("127.0.0.1:7681") == ("127.0.0.1", 7681)
    assert web.parse_listen("[::1]:0") == ("::1", 0)
    assert web.parse_listen(":8080") == ("127.0.0.1", 8080)
    for bad in ("7681", "host:", "a:b:c:1", "[::1]", "h:70000"):
        with pytest.raises(web.WebError):
            web.parse_listen(bad)


def test_only_loopback_addresses_count_as_loopback() -> None:
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        assert web.is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "8.8.8.8"):
        assert not web.is_loopback(host), host


def test_origin_must_be_the_pages_own_scheme_and_host() -> None:
    names = web.allowed_host_names(web.WebConfig(host="127.0.0.1"))
    ok = web.origin_allowed
    assert ok("http://127.0.0.1:7681", "127.0.0.1:7681", False, names)
    assert ok("http://localhost:9000", "localhost:9000", False, names)  # an ssh -L tunnel on another port
    assert ok("HTTP://LOCALHOST:9000", "localhost:9000", False, names)
    assert not ok(None, "127.0.0.1:7681", False, names)
    assert not ok("null", "127.0.0.1:7681", False, names)
    assert not ok("http://evil.test", "127.0.0.1:7681", False, names)
    assert not ok("http://127.0.0.1:7682", "127.0.0.1:7681", False, names)  # another local server's page
    assert not ok("https://127.0.0.1:7681", "127.0.0.1:7681", False, names)
    assert not ok("http://127.0.0.1:7681", "127.0.0.1:7681", True, names)
    # DNS rebinding: the attacker's name pointed at 127.0.0.1 is same-origin, but not one of our names.
    assert not ok("http://evil.test:7681", "evil.test:7681", False, names)


def test_token_message_must_be_json_text_with_the_exact_token() -> None:
    t = "A" * 43
    assert web.check_token_message(json.dumps({"token": t}), t)
    for bad in (json.dumps({"token": t + "x"}), json.dumps({"token": t[:-1]}), json.dumps({"token": 1}),
                json.dumps([t]), t, "", "{", json.dumps({"token": t}).encode()):
        assert not web.check_token_message(bad, t), bad


def test_a_binary_message_must_be_exactly_one_frame() -> None:
    frame = protocol.encode({"type": "list", "id": 1})
    assert web.frame_ok(frame, 1 << 20)
    assert not web.frame_ok(frame + frame, 1 << 20)
    assert not web.frame_ok(frame[:-1], 1 << 20)
    assert not web.frame_ok(b"\0\0\0\0", 1 << 20)
    assert not web.frame_ok(frame, 4)


def test_token_file_is_created_0600_reused_and_refused_when_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "web-token"
    token = web.load_or_create_token(str(path))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sub").stat().st_mode & 0o777 == 0o700
    assert web.load_or_create_token(str(path)) == token
    path.chmod(0o644)
    with pytest.raises(web.WebError, match="chmod 600"):
        web.load_or_create_token(str(path))


def test_non_loopback_listen_without_tls_refuses_to_start(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vibest_pty.web", "--socket", str(tmp_path / "s"), "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 2, r
    assert "not a loopback address" in r.stderr and "--cert" in r.stderr


# -- the real thing ----------------------------------------------------------------------------------------------


class WebProc:
    """A `python -m vibest_pty.web` subprocess; `url` is the address it printed (with the token)."""

    def __init__(self, daemon: Daemon, listen: str = "127.0.0.1:0") -> None:
        self.daemon = daemon
        self.listen = listen
        self.token_file = os.path.join(daemon.dir, "web-token")
        self.log_path = os.path.join(daemon.dir, "web.log")
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> WebProc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vibest_pty.web", "--socket", self.daemon.socket, "--listen", self.listen,
            "--token-file", self.token_file, stdout=asyncio.subprocess.PIPE, stderr=self._log,
        )
        assert self.proc.stdout is not None
        try:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        except TimeoutError:
            line = ""
        m = re.search(r"(http://\S+)", line)
        assert m, f"no URL printed: {line!r}\n{self.log()}"
        self.url = m.group(1)
        return self

    @property
    def base(self) -> str:
        return self.url.split("#", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base.rstrip("/").rsplit(":", 1)[1])

    @property
    def token(self) -> str:
        return self.url.split("#token=", 1)[1]

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
            self._log.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM:
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs it as root)")
    if not (web.STATIC_DIR / "index.html").is_file():
        pytest.fail("the page is not built: run `npm run build:web` in sdk/typescript (./test does it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def webproc(daemon: Daemon) -> AsyncIterator[WebProc]:
    w = await WebProc(daemon).start()
    yield w
    await w.stop()


async def shell_session(c: Client) -> int:
    """A bash with a known prompt, its prompt already printed (so the page can only see it in a snapshot)."""
    info = await c.create(shell="bash", args=["--norc", "--noprofile"], env={"PS1": PROMPT}, cols=80, rows=24,
                          name="web-test", attach=True)
    await read_until(c, info["id"], PROMPT.encode())
    await c.detach(info["id"])
    return int(info["id"])


async def screen(page: Any) -> str:
    return str(await page.evaluate("window.vibest.screenText()"))


async def wait_screen(page: Any, pattern: str, timeout: float = 15.0) -> str:
    """The screen once `pattern` (a regex, multiline) matches it."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = await screen(page)
        if re.search(pattern, text, re.M):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pattern!r} not on the screen:\n{text}")


async def wait_for(page: Any, js: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(js)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{js} stayed {value!r}")


async def type_line(page: Any, line: str) -> None:
    await page.keyboard.type(line)
    await page.keyboard.press("Enter")


async def daemon_connections(c: Client) -> int:
    return int((await c.stats())["connections"])


async def test_page_paints_the_snapshot_runs_commands_follows_resize_and_reload(
    daemon: Daemon, client: Client, webproc: WebProc, browser: Any
) -> None:
    sid = await shell_session(client)
    page = await browser.new_page(viewport={"width": 1100, "height": 700})
    await page.goto(webproc.url)
    # The prompt was printed before the page existed: it can only come from the attach snapshot.
    await wait_screen(page, re.escape(PROMPT.strip()))
    assert (await page.evaluate("window.vibest.state().current")) == sid
    assert "web-test" in await page.inner_text("#sessions")

    await page.click("#terminal")
    await type_line(page, "echo hi")
    await wait_screen(page, r"^hi\s*$")

    # The window shrinks: the terminal refits, the session follows (stty size inside the session says so).
    await page.set_viewport_size({"width": 760, "height": 420})
    cols, rows = await wait_for(
        page, "(() => { const t = window.vibest.term; return t.cols < 80 && [t.cols, t.rows]; })()")
    await wait_for(page, "window.vibest.state().mode === 'live'")
    await type_line(page, "stty size")
    await wait_screen(page, rf"^{rows} {cols}\s*$")
    info = next(s for s in await client.list() if s["id"] == sid)
    assert (info["cols"], info["rows"]) == (cols, rows)

    # A reload re-attaches the same session (kept in the URL fragment) and paints the same screen.
    before = await screen(page)
    await page.reload()
    await wait_screen(page, rf"^{rows} {cols}\s*$")
    assert (await page.evaluate("window.vibest.state().current")) == sid
    after = await screen(page)
    assert [ln.rstrip() for ln in after.splitlines() if ln.strip()] == [
        ln.rstrip() for ln in before.splitlines() if ln.strip()]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web-page.png"
    await page.screenshot(path=str(shot))
    print(f"screenshot: {shot}")


async def test_a_flood_keeps_the_page_responsive_and_the_screen_catches_up(
    daemon: Daemon, client: Client, webproc: WebProc, browser: Any
) -> None:
    await shell_session(client)
    page = await browser.new_page(viewport={"width": 900, "height": 500})
    await page.goto(webproc.url)
    await wait_screen(page, re.escape(PROMPT.strip()))
    await page.click("#terminal")
    await type_line(page, "yes")
    await wait_screen(page, r"^y$")
    worst = 0.0
    max_backlog = 0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        t0 = time.monotonic()
        backlog = await page.evaluate("window.vibest.state().backlog")
        worst = max(worst, time.monotonic() - t0)
        max_backlog = max(max_backlog, backlog)
        await asyncio.sleep(0.05)
    await page.keyboard.press("Control+C")
    t0 = time.monotonic()
    # The tty flushes type-ahead on SIGINT (as in any terminal): type once the prompt is back.
    await wait_screen(page, r"\^C\s*\n" + re.escape(PROMPT.strip()) + r"\s*$", timeout=30)
    await type_line(page, "echo flood-$((6*7))")
    await wait_screen(page, r"^flood-42\s*$", timeout=30)
    recovered = time.monotonic() - t0
    print(f"flood: worst page round trip {worst * 1000:.0f} ms, max xterm backlog {max_backlog} B, "
          f"prompt back after {recovered:.1f} s")
    # Budgets are loose for a loaded 2-core box; unbounded buffering would freeze the page for many seconds.
    assert worst < 3.0
    assert max_backlog < 2 * 1024 * 1024


async def test_wrong_token_and_foreign_origin_are_refused_before_the_daemon(
    daemon: Daemon, client: Client, webproc: WebProc, browser: Any
) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    await shell_session(client)
    baseline = await daemon_connections(client)
    assert baseline == 1

    # The page with a wrong token says so and stops trying.
    page = await browser.new_page()
    await page.goto(webproc.base + "#token=" + "x" * 43)
    await wait_for(page, "document.getElementById('status').textContent.includes('token is missing or wrong')")
    assert (await page.evaluate("window.vibest.state().lastClose.code")) == web.CLOSE_UNAUTHORIZED
    assert await daemon_connections(client) == baseline

    # A page of another origin, even one that knows the token, cannot open the WebSocket.
    evil = await browser.new_page()
    await evil.route("http://evil.test/**", lambda route: route.fulfill(
        content_type="text/html",
        body=f"""<script>
          window.result = 'pending';
          const ws = new WebSocket('ws://127.0.0.1:{webproc.port}/ws');
          ws.onopen = () => {{ ws.send(JSON.stringify({{token: '{webproc.token}'}})); window.result = 'open'; }};
          ws.onmessage = (e) => {{ window.result = 'message: ' + e.data; }};
          ws.onclose = (e) => {{ if (window.result === 'pending') window.result = 'closed ' + e.code; }};
        </script>"""))
    await evil.goto("http://evil.test/")
    result = await wait_for(evil, "window.result !== 'pending' && window.result")
    assert result == "closed 1006", result
    assert await daemon_connections(client) == baseline

    # The same refusals at the protocol level: no token, a frame instead of the token, a foreign Origin.
    origin = webproc.base.rstrip("/")
    url = f"ws://127.0.0.1:{webproc.port}/ws"
    for first in (json.dumps({"token": ""}), protocol.encode({"type": "list", "id": 1}), webproc.token):
        async with ws_connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send(first)
            with pytest.raises(ConnectionClosed) as exc:
                await ws.recv()
            assert exc.value.rcvd is not None and exc.value.rcvd.code == web.CLOSE_UNAUTHORIZED
    for bad_origin in (None, "http://evil.test", f"http://localhost:{webproc.port + 1}"):
        with pytest.raises(InvalidStatus) as exc2:
            async with ws_connect(url, origin=bad_origin):  # type: ignore[arg-type]
                pass
        assert exc2.value.response.status_code == 403
    assert await daemon_connections(client) == baseline
    assert "wrong token" in webproc.log() and "is not this server's own" in webproc.log()

    # The right token and Origin relay frames: one frame per message, both ways.
    async with ws_connect(url, origin=origin) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"token": webproc.token}))
        assert json.loads(await ws.recv()) == {"ok": True}
        await ws.send(protocol.encode({"type": "list", "id": 7}))
        reply = protocol.decode_all(await ws.recv())  # type: ignore[arg-type]
        assert len(reply) == 1 and reply[0]["id"] == 7 and reply[0]["type"] == "ok"  # type: ignore[index]
        assert await daemon_connections(client) == baseline + 1


async def test_page_reconnects_with_since_after_a_dropped_websocket_and_explains_a_gone_daemon(
    daemon: Daemon, client: Client, webproc: WebProc, browser: Any
) -> None:
    sid = await shell_session(client)
    page = await browser.new_page(viewport={"width": 900, "height": 500})
    await page.goto(webproc.url)
    await wait_screen(page, re.escape(PROMPT.strip()))
    await page.click("#terminal")
    await type_line(page, "echo before")
    await wait_screen(page, r"^before\s*$")

    # The web server goes away (the WebSocket drops); output made meanwhile must arrive once it is back.
    port = webproc.port
    await webproc.stop()
    await wait_for(page, "document.getElementById('status').textContent.includes('reconnecting')")
    await client.input(sid, b"echo during-$((6*7))\n")
    again = await WebProc(daemon, listen=f"127.0.0.1:{port}").start()
    try:
        assert again.token == webproc.token  # the token file is reused: the open page stays valid
        await wait_screen(page, r"^during-42\s*$", timeout=30)
        rec = await page.evaluate("window.vibest.state().lastReconnect")
        assert rec["sessions"][0]["session"] == sid and rec["sessions"][0]["mode"] == "replay", rec
        assert "before" in await screen(page)

        # The daemon stops: the page says what is wrong and what to do.
        daemon.stop()
        await wait_for(page, "document.getElementById('status').textContent.includes('daemon is not reachable')",
                       timeout=30)
        assert "vibest-pty-daemon" in await page.inner_text("#status")
    finally:
        await again.stop()
