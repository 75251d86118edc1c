"""Worker health probe: exit 0 when this worker's heartbeat in Redis is fresh, 1 otherwise.

    python deploy/docker/heartbeat_probe.py vad|asr

Used as the Docker HEALTHCHECK of the worker images and as the Kubernetes readiness probe of the
worker pods. It reads the same environment as the worker (REDIS_URL, KEY_PREFIX, CONSUMER_NAME,
HEARTBEAT_TTL_S) through :class:`shared.settings.Settings`, and looks up the worker's own entry in
the ``heartbeats:{role}`` sorted set that the worker refreshes every HEARTBEAT_INTERVAL_S. A fresh
entry means the worker has loaded its model, reached Redis and its event loop is turning.
"""

from __future__ import annotations

import sys
import time

import redis

from shared.keys import Keys
from shared.settings import Settings

ROLES = ("vad", "asr")


def heartbeat_age(settings: Settings, role: str, client: redis.Redis | None = None) -> float | None:
    """Seconds since this worker's last heartbeat, or None when it has none."""
    r = client or redis.Redis.from_url(
        settings.effective_redis_url, socket_timeout=2, socket_connect_timeout=2
    )
    score = r.zscore(Keys(settings.key_prefix).heartbeats(role), settings.consumer_name)
    return None if score is None else max(0.0, time.time() - float(score))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: heartbeat_probe.py {'|'.join(ROLES)}", file=sys.stderr)
        return 2
    settings = Settings()
    try:
        age = heartbeat_age(settings, argv[0])
    except redis.RedisError as exc:
        print(f"redis unreachable: {exc}", file=sys.stderr)
        return 1
    if age is None:
        print(f"no heartbeat for {settings.consumer_name}", file=sys.stderr)
        return 1
    if age > settings.heartbeat_ttl_s:
        print(f"heartbeat {age:.1f}s old (ttl {settings.heartbeat_ttl_s}s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
