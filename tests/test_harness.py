"""The shared harness itself (vibest_pty.testing): a RawPeer keeps every frame it skips, in order, and a Daemon is
ready only when its own process answers (not another daemon on the same socket)."""

from __future__ import annotations

import socket

import pytest

from vibest_pty import protocol
from vibest_pty.testing import Daemon, RawPeer, RequestFailed


def _pair() -> tuple[RawPeer, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    return RawPeer(sock=a), b


def test_a_reply_and_the_frames_around_it_in_one_read_keep_their_order() -> None:
    peer, daemon_end = _pair()
    frames = [{"type": "output", "session": 1, "offset": 0, "data": b"a"}, {"type": "ok", "id": 7},
              {"type": "output", "session": 1, "offset": 1, "data": b"b"}, {"type": "exit", "session": 1}]
    daemon_end.sendall(b"".join(protocol.encode(f) for f in frames))  # one read holds them all
    assert peer.reply(7) == {"type": "ok", "id": 7}
    assert peer.wait_event("exit", 1)["type"] == "exit"
    assert [peer.next_message()["offset"] for _ in range(2)] == [0, 1], "skipped frames stay, in order"
    daemon_end.close()
    assert peer.recv() is None and peer.read(3) == []
    peer.close()


def test_request_raises_the_error_reply_and_call_returns_it() -> None:
    peer, daemon_end = _pair()
    err = {"type": "error", "id": 1, "code": "session_not_found", "message": "no session 9"}
    daemon_end.sendall(protocol.encode(err) + protocol.encode({**err, "id": 2}))
    with pytest.raises(RequestFailed) as e:
        peer.request("kill", session=9)
    assert e.value.code == "session_not_found"
    assert peer.call("kill", session=9)["id"] == 2
    assert protocol.decode_all(daemon_end.recv(4096)) == [
        {"type": "kill", "id": 1, "session": 9}, {"type": "kill", "id": 2, "session": 9}]
    peer.close()
    daemon_end.close()


def test_a_second_daemon_on_a_served_socket_is_not_taken_for_ready(daemon: Daemon) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        Daemon(daemon.dir).start(timeout=20)  # it refuses (the lock): the first one answering is not it
    with daemon.raw() as peer:
        assert peer.server_pid() == daemon.pid
