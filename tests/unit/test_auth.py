"""API keys, session tokens and origins (pure)."""

from __future__ import annotations

import hashlib

import pytest

from gateway.auth import AuthConfigError, Authenticator, credential_from, parse_key
from gateway.protocol import ProtocolError
from shared.settings import Settings

BOB_DIGEST = hashlib.sha256(b"bobs-secret").hexdigest()


def auth(**kw: object) -> Authenticator:
    base = {
        "api_keys": f"alice:alices-secret,bob:sha256:{BOB_DIGEST}",
        "auth_enabled": True,
        "auth_token_secret": "shared-secret",
    }
    return Authenticator(Settings(**(base | kw)))


def test_plain_and_hashed_keys() -> None:
    a = auth()
    assert a.check_key("alices-secret") == "alice"
    assert a.check_key("bobs-secret") == "bob"
    assert a.check_key("alices-secret ") is None and a.check_key("") is None
    assert all(len(k.digest) == 32 for k in a.keys)  # only digests are kept


def test_keys_file(tmp_path) -> None:
    f = tmp_path / "keys"
    f.write_text("# team keys\ncarol:carols-secret\n\n")
    a = auth(api_keys="", api_keys_file=str(f))
    assert a.check_key("carols-secret") == "carol"


@pytest.mark.parametrize("spec", ["x:sha256:zz", "x:sha256:abcd", "x:"])
def test_bad_key_specs(spec: str) -> None:
    with pytest.raises(AuthConfigError):
        parse_key(spec)


def test_auth_on_without_keys_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="API_KEYS"):
        Authenticator(Settings(auth_enabled=True, api_keys=""))


def test_tokens() -> None:
    a = auth()
    token, ttl = a.mint("alice", now=1000.0)
    assert ttl == 300 and token.startswith("wst1.")
    assert a.check_token(token, now=1100.0) == "alice"
    assert a.check_token(token, now=1301.0) is None  # expired
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert a.check_token(tampered, now=1100.0) is None
    other = auth(auth_token_secret="another")
    assert other.check_token(token, now=1100.0) is None
    # replicas with the same secret accept each other's tokens
    assert auth().check_token(token, now=1100.0) == "alice"


def test_without_a_secret_nothing_is_minted_or_accepted_and_keys_do_not_make_one() -> None:
    """No secret derived from the keys: whoever can read a ``name:sha256:`` file cannot sign.
    (The gateway loads a random one shared through Redis: tests/integration/test_auth_redis.py.)"""
    import hmac as hmac_mod
    import json

    from gateway.auth import _b64

    a = auth(auth_token_secret="")
    with pytest.raises(RuntimeError, match="secret"):
        a.mint("alice")
    # the derivation an earlier version used, from the digests alone
    material = b"".join(sorted(k.digest for k in a.keys))
    old = hmac_mod.new(b"whisper-streaming-token", material, hashlib.sha256).digest()
    kid = next(k.fingerprint for k in a.keys if k.name == "bob")
    payload = _b64(json.dumps({"sub": "bob", "kid": kid, "exp": 2**40}).encode())
    forged = f"wst1.{payload}.{_b64(hmac_mod.new(old, payload.encode(), hashlib.sha256).digest())}"
    assert a.check_token(forged) is None


def test_a_revoked_or_replaced_keys_tokens_stop_working(tmp_path) -> None:
    f = tmp_path / "keys"
    f.write_text("carol:carols-secret\ndave:daves-secret\n")
    a = auth(api_keys="", api_keys_file=str(f))
    carol, _ = a.mint("carol")
    dave, _ = a.mint("dave")
    assert a.authenticate(carol).name == "carol" and a.authenticate(dave).name == "dave"
    # the Secret is updated in place: carol revoked, dave's key replaced under the same name
    f.write_text("dave:daves-new-secret\nerin:erins-secret\n")
    a.refresh_keys(now=10**9)  # the file is looked at every KEYS_RECHECK_S; here at once
    for token in (carol, dave):
        with pytest.raises(ProtocolError):
            a.authenticate(token)
    with pytest.raises(ProtocolError):
        a.authenticate("carols-secret")
    assert a.authenticate("erins-secret").name == "erin"
    assert a.authenticate(a.mint("dave")[0]).name == "dave"  # the new key's tokens work
    # a broken file keeps the keys in force
    f.write_text("dave:sha256:nothex\n")
    a.refresh_keys(now=2 * 10**9)
    assert a.authenticate("erins-secret").name == "erin"


def test_authenticate() -> None:
    a = auth()
    assert a.authenticate("bobs-secret").name == "bob"
    token, _ = a.mint("alice")
    assert a.authenticate(token).via == "token"
    for bad in (None, "", "nope", "wst1.x.y"):
        with pytest.raises(ProtocolError) as info:
            a.authenticate(bad)
        assert info.value.code == "unauthorized" and info.value.close_code == 1008
    assert Authenticator(Settings(auth_enabled=False)).authenticate(None).via == "open"


def test_origins() -> None:
    a = auth(allowed_origins="https://app.example.com, http://localhost:8000/")
    a.check_origin(None)  # not a browser
    a.check_origin("https://app.example.com")
    a.check_origin("http://localhost:8000")
    with pytest.raises(ProtocolError) as info:
        a.check_origin("https://evil.example")
    assert info.value.code == "origin_not_allowed"
    auth().check_origin("https://anything.example")  # no list: any origin


def test_credential_sources() -> None:
    assert credential_from({"authorization": "Bearer k1"}, {"token": "k2"}) == "k1"
    assert credential_from({}, {"token": "k2"}) == "k2"
    assert credential_from({"authorization": "Basic xyz"}, {}) is None


@pytest.mark.parametrize(
    "credential", ["wst1.é.ü", "wst1.x.\u2603", "ключ", "bad\udcff", "wst1.x.\udcff"]
)
def test_non_ascii_credentials_are_refused_not_crashed(credential: str) -> None:
    """A non-ASCII token made hmac.compare_digest raise TypeError (HTTP 500, a dead socket)."""
    a = auth()
    with pytest.raises(ProtocolError) as exc:
        a.authenticate(credential)
    assert exc.value.code == "unauthorized"
    assert a.check_key(credential) is None and a.check_token(credential) is None


def test_failed_attempts_are_throttled_per_address_and_bounded() -> None:
    from gateway.auth import FailedAttempts

    f = FailedAttempts(limit=3, window_s=60, max_addresses=2)
    for t in range(3):
        assert f.retry_after("1.2.3.4", t) == 0
        f.failed("1.2.3.4", t)
    assert f.retry_after("1.2.3.4", 3) == 57  # the oldest of the last 3 leaves the window at 60
    assert f.retry_after("5.6.7.8", 3) == 0  # other addresses are not affected
    assert f.retry_after("1.2.3.4", 60.5) == 0  # the window slid on
    f.failed("a", 70)
    f.failed("b", 70)
    f.failed("c", 70)
    assert len(f._seen) == 2  # bounded: the least recently failing address was forgotten


def test_an_authenticator_has_a_throttle_from_settings() -> None:
    a = auth(auth_max_failures=2, auth_failure_window_s=10)
    a.failures.failed("x", 0)
    a.failures.failed("x", 1)
    assert a.failures.retry_after("x", 2) == 8
