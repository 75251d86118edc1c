"""Pure parts of shared/redis_util.py: which Redis answers mean a lost group, and how often an
entry being processed is re-claimed."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.redis_util import hold_interval_s, is_nogroup


def test_nogroup_and_a_deleted_stream_under_a_blocked_read_mean_a_lost_group() -> None:
    assert is_nogroup(ResponseError("NOGROUP No such key 's' or consumer group 'g'"))
    assert is_nogroup(
        ResponseError("Command # 1 (XREADGROUP ...) of pipeline caused error: NOGROUP No such")
    )
    assert is_nogroup(ResponseError("UNBLOCKED the stream key no longer exists"))
    assert not is_nogroup(ResponseError("BUSYGROUP Consumer Group name already exists"))
    assert not is_nogroup(ResponseError("WRONGTYPE Operation against a key"))
    assert not is_nogroup(RedisConnectionError("NOGROUP in a connection error is no answer"))


def test_an_entry_is_re_claimed_three_times_per_claim_idle_time() -> None:
    assert hold_interval_s(60_000) == 20.0
    assert hold_interval_s(1000) < 1000 / 2000  # before a peer's claim round can take it
