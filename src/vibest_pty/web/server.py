"""`vibest-pty web`: serve the web terminal page and relay the daemon's protocol over WebSockets.

It is one more client of the daemon, like the CLI: each WebSocket gets its own connection to the daemon's Unix
socket, and every protocol frame (u32 length + MessagePack map, docs/protocol.md) travels as one binary WebSocket
message, unchanged, both ways. The daemon checks the frames as it does for any client.

What stands between a web page and the user's shells (docs/security.md, "The web server"):
- it listens on loopback unless --listen names another address, which then requires TLS (--cert, --key);
- the `Host` must be one of its own names (DNS rebinding) and the WebSocket's `Origin` must be the page's own
  (`scheme://Host`), else the handshake gets 403;
- the first WebSocket message must carry the token (32 random bytes, kept 0600 in --token-file); the URL printed
  holds it in the fragment, which browsers never send, so it is in no request line or log. A missing or wrong
  token closes the WebSocket with 4401;
nothing of a refused peer reaches the daemon: the daemon connection is opened only after all three checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import stat
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import protocol
from ..config import default_socket_path

log = logging.getLogger("vibest_pty.web")

DEFAULT_LISTEN: Final = "127.0.0.1:7681"
WS_PATH: Final = "/ws"
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
# Close codes (RFC 6455 leaves 4000-4999 to applications); sdk/typescript/src/transport-websocket.ts has the same.
CLOSE_UNAUTHORIZED: Final = 4401
CLOSE_NO_DAEMON: Final = 4502
# The token message must come within this long, and be this small (a larger first message is refused unread).
AUTH_TIMEOUT_S: Final = 10.0
AUTH_MESSAGE_MAX: Final = 4096
# WebSockets at once (authenticated or not); each costs one daemon connection (the daemon's own cap is 100).
DEFAULT_MAX_CONNECTIONS: Final = 32
# Bytes websockets may buffer towards one browser before `send` waits: with this, a browser that does not keep up
# stops us reading its daemon connection, and the daemon's flow control (resync) takes over.
WRITE_LIMIT: Final = 256 * 1024
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,256}")
ASSET_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# xterm.js injects <style> elements for its theme, hence 'unsafe-inline' for styles only; no script but ours.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class WebError(Exception):
    """A start-up error: one line on stderr, exit status 2 (bad arguments) or 1 (environment)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 7681
    socket_path: str = field(default_factory=default_socket_path)
    token_file: str = ""
    cert: str | None = None
    key: str | None = None
    assets: Path = STATIC_DIR
    allow_hosts: list[str] = field(default_factory=list)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_frame: int = protocol.DEFAULT_MAX_FRAME

    @property
    def tls(self) -> bool:
        return self.cert is not None


# -- pure helpers (unit-tested) ----------------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (loopback). Port 0 picks a free port."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]*):(\d+)", text.strip())
    if not m:
        raise WebError(f"--listen {text!r}: expected HOST:PORT (e.g. 127.0.0.1:7681, [::1]:7681)")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise WebError(f"--listen {text!r}: port out of range")
    return (host or "127.0.0.1"), port


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def split_host(value: str) -> str:
    """The host name of a Host header value (`name:port`, `[v6]:port`), lower-cased."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1 : v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def allowed_host_names(config: WebConfig) -> frozenset[str]:
    """Names the browser may use for us (the Host header): loopback names, the listen address, --allow-host; on a
    wildcard address also this machine's names. Anything else is a DNS-rebinding attempt or a misconfiguration."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in config.allow_hosts}
    host = config.host.lower()
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names.add(host)
    return frozenset(names)


def origin_allowed(origin: str | None, host_header: str | None, tls: bool, names: frozenset[str]) -> bool:
    """The WebSocket's Origin must be the page's own: `scheme://Host`, with Host one of our names."""
    if not origin or not host_header or split_host(host_header) not in names:
        return False
    return origin.strip().lower() == f"{'https' if tls else 'http'}://{host_header.strip().lower()}"


def check_token_message(message: str | bytes, token: str) -> bool:
    """The first WebSocket message: text `{"token": "..."}` holding exactly our token (compared in constant time)."""
    if not isinstance(message, str):
        return False
    try:
        value = json.loads(message)
    except ValueError:
        return False
    given = value.get("token") if isinstance(value, dict) else None
    return isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())


def frame_ok(message: bytes, max_frame: int) -> bool:
    """One whole protocol frame: a u32 length N (1..max_frame) followed by exactly N bytes."""
    if len(message) < 5:
        return False
    (n,) = struct.unpack_from(">I", message)
    return 1 <= int(n) <= max_frame and len(message) == 4 + int(n)


def default_token_file(socket_path: str) -> str:
    return os.path.join(os.path.dirname(socket_path), "web-token")


def load_or_create_token(path: str) -> str:
    """The token kept in `path`: read it (the file must be ours and 0600-like), or create it with a new random one,
    0600 from the start (O_EXCL under the right mode), in a 0700 directory created when missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return load_or_create_token(path)  # another `vibest-pty web` made it first
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    except OSError as exc:
        raise WebError(f"token file {path}: {exc.strerror}", 1) from exc
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise WebError(f"token file {path} is not a regular file", 1)
        if st.st_uid != os.getuid():
            raise WebError(f"token file {path} belongs to uid {st.st_uid}, not to you", 1)
        if st.st_mode & 0o077:
            raise WebError(f"token file {path} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it", 1)
        token = f.read(1024).strip()
    if not TOKEN_RE.fullmatch(token):
        raise WebError(f"token file {path} does not hold a token (16-256 of A-Z a-z 0-9 _ -): remove it", 1)
    return token


def load_assets(directory: Path) -> dict[str, tuple[bytes, str]]:
    """The page's files (built by `npm run build:web` in sdk/typescript), read once: path -> (body, type)."""
    if not (directory / "index.html").is_file():
        raise WebError(
            f"the page is not built ({directory}/index.html is missing): run `npm ci && npm run build:web` in "
            "sdk/typescript (./test does it)",
            1,
        )
    assets: dict[str, tuple[bytes, str]] = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and ASSET_RE.fullmatch(p.name):
            assets["/" + p.name] = (p.read_bytes(), CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
    assets["/"] = assets["/index.html"]
    return assets


def format_url(config: WebConfig, port: int, token: str) -> str:
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if config.tls else 'http'}://{host}:{port}/#token={token}"


# -- the server ----------------------------------------------------------------------------------------------------


class WebServer:
    """The HTTP + WebSocket server. `start()` binds; `url` is then the address to open (with the token)."""

    def __init__(self, config: WebConfig, token: str) -> None:
        self.config = config
        self.token = token
        self.assets = load_assets(config.assets)
        self.names = allowed_host_names(config)
        self.connections = 0
        self.server: Server | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        return format_url(self.config, self.port, self.token)

    async def start(self) -> None:
        ctx: ssl.SSLContext | None = None
        if self.config.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ctx.load_cert_chain(self.config.cert or "", self.config.key)
            except (OSError, ssl.SSLError) as exc:
                raise WebError(f"--cert/--key: {exc}", 1) from exc
        try:
            self.server = await serve(
                self.handle,
                self.config.host,
                self.config.port,
                ssl=ctx,
                process_request=self.process_request,
                # Terminal frames are mostly small and already fast on loopback; ssh -C compresses a tunnel.
                compression=None,
                max_size=AUTH_MESSAGE_MAX,
                write_limit=WRITE_LIMIT,
                server_header=None,
            )
        except OSError as exc:
            raise WebError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}", 1) from exc
        for sock in self.server.sockets:
            self.port = sock.getsockname()[1]
            break

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()  # browsers get 1001 (going away) and reconnect to the next server
            await self.server.wait_closed()

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _response(self, status: int, reason: str, body: bytes, content_type: str) -> Response:
        headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), **SECURITY_HEADERS})
        return Response(status, reason, headers, body)

    def _refuse(self, connection: ServerConnection, status: int, reason: str, why: str) -> Response:
        log.warning("refused %s: %s", connection.remote_address, why)
        return self._response(status, reason, f"{why}\n".encode(), "text/plain; charset=utf-8")

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        host = request.headers.get("Host")
        if not host or split_host(host) not in self.names:
            return self._refuse(connection, 421, "Misdirected Request",
                                f"Host {host!r} is not one of this server's names (see --allow-host)")
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if not origin_allowed(origin, host, self.config.tls, self.names):
                return self._refuse(connection, 403, "Forbidden", f"Origin {origin!r} is not this server's own")
            if self.connections >= self.config.max_connections:
                return self._refuse(connection, 503, "Service Unavailable",
                                    f"too many connections ({self.config.max_connections})")
            return None  # on to the WebSocket handshake
        asset = self.assets.get(path)
        if asset is None:
            return self._response(404, "Not Found", b"not found\n", "text/plain; charset=utf-8")
        return self._response(200, "OK", asset[0], asset[1])

    # -- WebSocket -----------------------------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            await self._relay(ws)
        finally:
            self.connections -= 1

    async def _relay(self, ws: ServerConnection) -> None:
        peer = ws.remote_address
        try:
            first = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S)
        except (TimeoutError, ConnectionClosed):
            log.warning("refused %s: no token within %.0f s", peer, AUTH_TIMEOUT_S)
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized: no token")
            return
        if not check_token_message(first, self.token):
            log.warning("refused %s: wrong token", peer)
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized: wrong token")
            return
        path = self.config.socket_path
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=2**20)
        except OSError as exc:
            log.warning("%s: no daemon on %s (%s)", peer, path, exc.strerror)
            await ws.close(CLOSE_NO_DAEMON, f"no daemon on {path}: {exc.strerror}"[:120])
            return
        log.info("%s: connected to the daemon", peer)
        # Authenticated: from now on a message may be a whole frame of the daemon's maximum size.
        ws.protocol.max_message_size = self.config.max_frame + 4
        try:
            await ws.send(json.dumps({"ok": True}))
            up = asyncio.create_task(self._browser_to_daemon(ws, writer))
            down = asyncio.create_task(self._daemon_to_browser(reader, ws))
            _done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in (up, down):
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                    await t
        except ConnectionClosed:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            log.info("%s: closed", peer)

    async def _browser_to_daemon(self, ws: ServerConnection, writer: asyncio.StreamWriter) -> None:
        async for message in ws:
            if isinstance(message, str):
                await ws.close(1003, "after the token, only binary frames")
                return
            if not frame_ok(message, self.config.max_frame):
                await ws.close(1007, "a binary message must hold exactly one protocol frame")
                return
            writer.write(message)
            await writer.drain()  # a daemon that does not read stops us reading this browser

    async def _daemon_to_browser(self, reader: asyncio.StreamReader, ws: ServerConnection) -> None:
        try:
            while True:
                header = await reader.readexactly(4)
                (n,) = struct.unpack(">I", header)
                if n == 0 or n > self.config.max_frame:
                    await ws.close(CLOSE_NO_DAEMON, "the daemon sent a bad frame")
                    return
                payload = await reader.readexactly(n)
                await ws.send(header + payload)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            await ws.close(CLOSE_NO_DAEMON, "the daemon closed the connection")


# -- command line --------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {DEFAULT_LISTEN}); a non-loopback address needs --cert/--key")
    p.add_argument("--token-file", metavar="FILE",
                   help="where the access token is kept, 0600 (default: web-token next to the daemon's socket)")
    p.add_argument("--cert", metavar="FILE", help="TLS certificate chain (PEM): serve https/wss")
    p.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name the browser may use for this server (repeatable)")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                   help=f"WebSockets at once (default {DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--assets", type=Path, default=STATIC_DIR, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> WebConfig:
    host, port = parse_listen(args.listen)
    if (args.cert is None) != (args.key is None):
        raise WebError("--cert and --key go together")
    if not is_loopback(host) and args.cert is None:
        raise WebError(f"--listen {args.listen}: {host} is not a loopback address; serving it needs TLS "
                       "(--cert FILE --key FILE), or keep loopback and use ssh -L (docs/web.md)")
    if args.max_connections < 1:
        raise WebError("--max-connections must be at least 1")
    socket_path = getattr(args, "socket", None) or default_socket_path()
    return WebConfig(
        host=host, port=port, socket_path=socket_path,
        token_file=args.token_file or default_token_file(socket_path),
        cert=args.cert, key=args.key, assets=args.assets, allow_hosts=list(args.allow_host),
        max_connections=args.max_connections,
    )


async def serve_until_stopped(config: WebConfig) -> int:
    token = load_or_create_token(config.token_file)
    server = WebServer(config, token)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"vibest-pty web: open {server.url}", flush=True)
    print(f"vibest-pty web: token in {config.token_file}; daemon socket {config.socket_path}", file=sys.stderr,
          flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """`vibest-pty web` (the CLI's subcommand calls this with its parsed arguments)."""
    try:
        config = config_from_args(args)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("websockets").setLevel(logging.WARNING)
        try:
            import uvloop
        except ImportError:
            return asyncio.run(serve_until_stopped(config))
        return uvloop.run(serve_until_stopped(config))
    except WebError as exc:
        print(f"vibest-pty web: {exc}", file=sys.stderr)
        return exc.code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vibest-pty web", description="Serve the web terminal on loopback.")
    p.add_argument("--socket", metavar="PATH", help="the daemon's socket (default $RUST_PTY_SOCKET_PATH, else "
                   "$HOME/.vibest/pty/socket)")
    add_arguments(p)
    return run(p.parse_args(argv))
