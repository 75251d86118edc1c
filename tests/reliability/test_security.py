"""Authentication and authorisation end to end, and Redis with a password and with TLS."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.conftest import librispeech, wait_http
from tests.reliability.test_crash_recovery import start_stack
from tests.reliability.test_limits import expect_error
from whisper_streaming.evaluation import wer
from whisper_streaming.listen import CLOSE_STREAM, FINALIZE, flatten
from whisper_streaming.replay import load_pcm, stream_pcm
from whisper_streaming.up import EmbeddedRedis, free_port

pytestmark = pytest.mark.e2e

KEYS = "alice:alices-secret,bob:sha256:" + hashlib.sha256(b"bobs-secret").hexdigest()
AUTH = {
    "AUTH_ENABLED": "true",
    "API_KEYS": KEYS,
    "ALLOWED_ORIGINS": "http://good.example",
    "API_KEY_MAX_SESSIONS": "1",
}


def utterance() -> tuple[bytes, str]:
    utt = next(u for u in librispeech() if u.utt_id == "2830-3980-0043")
    return load_pcm(utt.path), utt.reference


async def expect_refused(url: str, status: int, err_code: str, **kwargs: Any) -> None:
    """/v1/listen refuses before the upgrade, as Deepgram: an HTTP status and its JSON error."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, **kwargs)
    response = refused.value.response
    assert response.status_code == status
    assert json.loads(response.body)["err_code"] == err_code


async def first_message(ws: Any) -> dict[str, Any]:
    return flatten(json.loads(await asyncio.wait_for(ws.recv(), 30)))


async def close_stream(ws: Any) -> None:
    """CloseStream and read to the server's close: the key's session is released by then."""
    await ws.send(CLOSE_STREAM)
    async for _ in ws:
        pass


def post(url: str, headers: dict[str, str], data: bytes = b"") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def test_keys_tokens_origins_and_per_key_limits(spawn) -> None:
    _, (url,) = start_stack(spawn, **AUTH)
    http = url.replace("ws://", "http://")
    pcm, reference = utterance()

    # no credentials, a wrong key, a bad origin: refused with a clear error and 1008
    for target, kwargs, code in [
        (url + "/", {}, "unauthorized"),
        (url + "/?token=alices-secret", {"origin": "http://evil.example"}, "origin_not_allowed"),
    ]:
        async with websockets.connect(target, **kwargs) as ws:
            await expect_error(ws, code, 1008)
    await expect_refused(url + "/v1/listen", 401, "INVALID_AUTH")
    await expect_refused(url + "/v1/listen?token=guess", 401, "INVALID_AUTH")
    bad_origin = {"origin": "http://evil.example"}
    await expect_refused(url + "/v1/listen?token=alices-secret", 403, "FORBIDDEN", **bad_origin)

    # the predecessor's clients put the key in the URL they are given; nothing else changes
    ok = await stream_pcm(url + "/?token=alices-secret", pcm, speed=0, send_config=False)
    assert ok.close_code == 1000 and wer([(reference, ok.text)]).wer <= 0.2
    # a header works on the native endpoint, and an allowed origin passes
    async with websockets.connect(
        url + "/v1/listen?session_started=true",
        additional_headers={"Authorization": "Bearer bobs-secret"}, origin="http://good.example",
    ) as ws:  # fmt: skip
        assert (await first_message(ws))["type"] == "session"
        # bob may hold one session at a time, across gateways
        await expect_refused(url + "/v1/listen?token=bobs-secret", 429, "TOO_MANY_REQUESTS")
        await close_stream(ws)
    async with websockets.connect(
        url + "/v1/listen?token=bobs-secret&session_started=true"
    ) as again:
        assert (await first_message(again))["type"] == "session"  # released at the end
        await close_stream(again)
    # Deepgram's ways: "Authorization: Token <key>", and the browser SDK's subprotocol pair
    async with websockets.connect(
        url + "/v1/listen?session_started=true",
        additional_headers={"Authorization": "Token alices-secret"},
    ) as ws:  # fmt: skip
        assert (await first_message(ws))["type"] == "session"
        await close_stream(ws)
    async with websockets.connect(
        url + "/v1/listen?session_started=true", subprotocols=["token", "alices-secret"]
    ) as ws:
        assert ws.subprotocol == "token" and (await first_message(ws))["type"] == "session"
        await close_stream(ws)
    await expect_refused(url + "/v1/listen", 401, "INVALID_AUTH", subprotocols=["token", "nope"])

    # a short-lived token for web pages, minted with a key
    status, body = post(http + "/v1/auth/token", {"Authorization": "Bearer alices-secret"})
    assert status == 200 and body["expires_in"] == 300
    viaToken = await stream_pcm(f"{url}/v1/listen?token={body['token']}", pcm, speed=0)
    assert viaToken.close_code == 1000 and wer([(reference, viaToken.text)]).wer <= 0.2
    assert post(http + "/v1/auth/token", {})[0] == 401
    assert post(http + "/v1/auth/token", {"Authorization": f"Bearer {body['token']}"})[0] == 401
    # Deepgram's grant: a key in, a short-lived access token out, used as a Bearer credential
    grant = json.dumps({"ttl_seconds": 60}).encode()
    token_key = {"Authorization": "Token alices-secret", "Content-Type": "application/json"}
    status, granted = post(http + "/v1/auth/grant", token_key, grant)
    assert status == 200 and granted["expires_in"] == 60 and granted["access_token"]
    bearer = {"Authorization": f"Bearer {granted['access_token']}"}
    async with websockets.connect(
        url + "/v1/listen?session_started=true", additional_headers=bearer
    ) as ws:
        assert (await first_message(ws))["type"] == "session"
        await close_stream(ws)
    status, refused = post(http + "/v1/auth/grant", {"Authorization": "Token nope"})
    assert status == 401 and refused["err_code"] == "INVALID_AUTH"

    # the HTTP API wants the same credentials; health and readiness stay open
    assert post(http + "/v1/audio/transcriptions", {})[0] == 401
    with urllib.request.urlopen(http + "/readyz") as r:
        assert r.status == 200


async def test_only_the_owner_may_resume(spawn) -> None:
    _, (url,) = start_stack(spawn, **(AUTH | {"API_KEY_MAX_SESSIONS": "5"}))
    pcm, _ = utterance()
    async with websockets.connect(
        url + "/v1/listen?token=alices-secret&session_started=true"
    ) as ws:
        sid = (await first_message(ws))["session_id"]
        await ws.send(pcm)
        await ws.send(CLOSE_STREAM)
        async for _ in ws:
            pass
    async with websockets.connect(f"{url}/v1/listen?token=bobs-secret&session_id={sid}") as ws:
        await expect_error(ws, "unknown_session", 1008)
    resume = f"{url}/v1/listen?token=alices-secret&session_id={sid}&session_started=true"
    async with websockets.connect(resume) as ws:
        assert (await first_message(ws))["resumed"] is True


def test_gateway_refuses_to_start_with_auth_on_and_no_keys(spawn) -> None:
    gw = spawn("gateway", PORT=str(free_port()), AUTH_ENABLED="true", API_KEYS="")
    assert gw.proc.wait(60) != 0
    assert "no API key is configured" in gw.log()


def make_tls_files(d: Path) -> None:
    run = lambda *a: subprocess.run(a, cwd=d, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "redis.crt")  # fmt: skip


@pytest.mark.parametrize("tls", [False, True], ids=["password", "tls+password"])
async def test_redis_with_password_and_tls(spawn, tmp_path: Path, tls: bool) -> None:
    port = free_port()
    args = ["--requirepass", "s3cret"]
    if tls:
        make_tls_files(tmp_path)
        args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tmp_path / "redis.crt"),
                 "--tls-key-file", str(tmp_path / "redis.key"), "--tls-ca-cert-file",
                 str(tmp_path / "ca.crt"), "--tls-auth-clients", "no"]  # fmt: skip
        redis_url = f"rediss://:s3cret@127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.crt'}"
    else:
        redis_url = f"redis://:s3cret@127.0.0.1:{port}/0"
    server = EmbeddedRedis(port=port, extra_args=args)
    server.start()
    try:
        procs, (url,) = start_stack(spawn, REDIS_URL=redis_url)
        pcm, reference = utterance()
        result = await stream_pcm(url, pcm, speed=0)
        assert result.close_code == 1000 and wer([(reference, result.text)]).wer <= 0.2
        for p in procs.values():
            assert "redis unavailable" not in p.log()
    finally:
        for p in procs.values():
            p.stop()
        server.stop()
        await asyncio.sleep(0)


def http_status(url: str, headers: dict[str, str], data: bytes = b"") -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


async def test_live_endpoints_hold_against_odd_tokens_floods_and_huge_echoes(spawn) -> None:
    """Issue 19, the live endpoints: a non-ASCII credential is a 401 (not a 500 / dead socket)
    on every endpoint; text frames are rate-limited; key guessing at /v1/auth/token is
    throttled; a 900 KB ``type`` is not echoed whole; ``?token=`` is not in the logs."""
    procs, (url,) = start_stack(
        spawn, **AUTH, AUTH_MAX_FAILURES="5", MAX_TEXT_FRAMES_PER_SECOND="20"
    )
    http = url.replace("ws://", "http://")
    odd = "wst1.%C3%A9.%E2%98%83"  # "wst1.é.☃", percent-encoded in the URL
    for path in ("/", "/ws"):
        async with websockets.connect(f"{url}{path}?token={odd}") as ws:
            await expect_error(ws, "unauthorized", 1008)
    await expect_refused(f"{url}/v1/listen?token={odd}", 401, "INVALID_AUTH")
    for path in ("/v1/audio/transcriptions", f"/v1/audio/transcriptions?token={odd}"):
        status, _ = http_status(http + path, {"Authorization": "Bearer wst1.é.ü"})
        assert status == 401, path

    # text frames: 100 finalize frames at once is over the 20 a second
    listen = url + "/v1/listen?token=alices-secret&session_started=true"
    async with websockets.connect(listen) as ws:
        assert (await first_message(ws))["type"] == "session"
        await ws.send(b"\x00\x00" * 1600)
        for _ in range(100):
            await ws.send(FINALIZE)
        await expect_error(ws, "rate_limited", 1008)

    # a 900 KB type: the error frame and the log line quote at most 64 characters of it
    async with websockets.connect(listen) as ws:
        assert (await first_message(ws))["type"] == "session"
        await ws.send(json.dumps({"type": "A" * 900_000}))
        while (msg := await first_message(ws))["type"] != "error":
            pass
        assert msg["code"] == "unsupported_message" and len(msg["message"]) < 200

    # key guessing: 5 wrong keys (one of them non-ASCII), then 429 with Retry-After, fast
    started = time.monotonic()
    assert http_status(http + "/v1/auth/token", {"Authorization": "Bearer wst1.é.ü"})[0] == 401
    codes = [
        http_status(http + "/v1/auth/token", {"Authorization": f"Bearer guess-{i}"})
        for i in range(30)
    ]
    assert [c for c, _ in codes[:4]] == [401] * 4
    assert all(c == 429 and int(h["Retry-After"]) > 0 for c, h in codes[4:])
    # the right key waits too: the address is throttled, not the key
    assert http_status(http + "/v1/auth/token", {"Authorization": "Bearer alices-secret"})[0] == 429
    assert time.monotonic() - started < 20

    log = procs["gw-0"].log()
    assert "alices-secret" not in log and "token=***" in log  # uvicorn's lines, redacted
    assert "AAAAAAAA" * 10 not in log  # clipped in the WARNING line too
    assert log.count("auth token: failed attempt from 127.0.0.1") == 5
    assert "guess-" not in log  # failed attempts are logged without the key


def test_metrics_and_api_schema_need_credentials_and_no_docs_pages(spawn) -> None:
    """/metrics and /openapi.json on the public port need a key when auth is on; the Swagger and
    ReDoc pages (CDN assets) do not exist; Prometheus reads the internal METRICS_PORT."""
    port, metrics_port = free_port(), free_port()
    gw = spawn("gateway", PORT=str(port), METRICS_PORT=str(metrics_port), **AUTH)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz", 60, [gw])

    def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    for path in ("/metrics", "/openapi.json"):
        status, body = get(base + path)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized", path
        status, body = get(base + path, {"Authorization": "Bearer alices-secret"})
        assert status == 200 and body, path
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert get(base + path)[0] == 404, path
    status, body = get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200 and b"whisper_" in body
