"""Connections that never finish their request headers are closed, and one gateway holds a
bounded number of connections (gateway/server.py)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import wait_http
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_trickled_headers_are_cut_off_and_others_are_served(spawn) -> None:
    port = free_port()
    gw = spawn("gateway", PORT=str(port), HTTP_HEADER_TIMEOUT_S="1", MAX_CONNECTIONS="500")
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", 60, [gw])
    slow = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        slow.append(s)
    # while they trickle, a normal client is served
    with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
        assert r.status == 200
    for s in slow[:20]:
        s.sendall(b"X-Trickle: 1\r\n")  # a byte now and then does not extend the deadline
    deadline = time.monotonic() + 30
    for s in slow:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        assert _closed_by_peer(s), "a slow-header connection was still held"
        s.close()
    assert gw.alive()


def test_requests_beyond_the_connection_cap_get_503(spawn) -> None:
    port = free_port()
    gw = spawn("gateway", PORT=str(port), HTTP_HEADER_TIMEOUT_S="30", MAX_CONNECTIONS="5")
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", 60, [gw])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    time.sleep(0.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/healthz", timeout=10)
    assert refused.value.code == 503
    refused.value.close()
    for s in held:
        s.close()
    deadline = time.monotonic() + 20
    while True:  # the cap is of connections at once: once they are gone, requests are served
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
                assert r.status == 200
                break
        except urllib.error.HTTPError as busy:
            busy.close()
            assert time.monotonic() < deadline
            time.sleep(0.2)
