"""Uploads are spooled to /tmp while they are read: a gateway takes TRANSCRIPTION_MAX_UPLOADS at
once (deploy/keda sizes the gateway's /tmp from it), the next one gets 503 too_many_uploads."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import wait_http
from whisper_streaming.up import free_port

pytestmark = pytest.mark.e2e


def test_uploads_beyond_the_limit_are_refused_until_one_ends(spawn) -> None:
    port = free_port()
    gw = spawn("gateway", PORT=str(port), TRANSCRIPTION_MAX_UPLOADS="1")
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", 60, [gw])
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    # one upload that is still arriving: headers and the start of its body, the rest withheld
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        + head
        + b"\0" * 4096
    )
    files = {"file": ("b.wav", b"RIFF" + b"\0" * 2000)}

    def second() -> httpx.Response:
        return httpx.post(base + "/v1/audio/transcriptions", files=files, timeout=30)

    deadline = time.monotonic() + 30
    while (resp := second()).json()["error"]["code"] != "too_many_uploads":
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)
    assert resp.status_code == 503
    slow.close()  # the first upload ends (client gone): its place is free again
    deadline = time.monotonic() + 30
    while (resp := second()).json()["error"]["code"] == "too_many_uploads":
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)
    assert resp.json()["error"]["code"] == "no_workers"  # admitted, then refused for its own reason
