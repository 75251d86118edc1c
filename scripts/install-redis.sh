#!/usr/bin/env bash
# Installs redis-server from the OS packages where we know how; otherwise says how to get it.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "redis-server not found: installing it from the Debian/Ubuntu packages" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
redis-server was not found and this system has no apt-get. Install Redis 7 yourself:
  Fedora/RHEL: sudo dnf install redis      macOS: brew install redis
or set REDIS_URL to an existing Redis (make run then uses it instead of an embedded one).
MSG
exit 1
