"""The pure part of one-socket-per-session: when a socket counts itself replaced."""

from __future__ import annotations

from gateway.attachment import Attachment


def test_a_notice_of_another_socket_replaces_an_attached_one() -> None:
    a = Attachment("gw/a")
    assert not a.notice("gw/a")
    assert a.notice("gw/b") and a.lost.is_set()


def test_a_resume_ignores_the_notices_of_takeovers_older_than_its_own() -> None:
    """Its queue is registered before its takeover: notices of earlier takeovers come first."""
    r = Attachment("gw/r")
    r.taking_over = True
    assert not r.notice("gw/older")  # published before this socket's own takeover
    assert not r.notice("gw/r")  # its own: from here on, another's means replaced
    assert r.notice("gw/newer")


def test_the_sessions_conn_decides_after_a_lost_notice() -> None:
    r = Attachment("gw/r")
    r.taking_over = True  # its own notice was lost with the subscription
    assert not r.replaced_by(None) and not r.replaced_by("gw/r")
    assert r.replaced_by("gw/other")
