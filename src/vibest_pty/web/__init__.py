"""The web terminal: `vibest-pty web` serves a page (xterm.js + the TypeScript SDK) and relays the protocol over
WebSockets to the daemon. See docs/web.md."""

from .server import WebConfig, WebError, WebServer, add_arguments, main, run

__all__ = ["WebConfig", "WebError", "WebServer", "add_arguments", "main", "run"]
