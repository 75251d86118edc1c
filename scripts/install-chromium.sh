#!/usr/bin/env bash
# Installs Debian's chromium package (for the browser end-to-end test, tests/e2e/test_web.py)
# when it is missing. Idempotent; no browser is downloaded from anywhere but the OS packages.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "chromium not found: installing it from the Debian/Ubuntu packages" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
  exit 0
fi
cat >&2 <<'MSG'
chromium was not found and this system has no apt-get. Install Chromium yourself
(Fedora/RHEL: sudo dnf install chromium) and set CHROMIUM=/path/to/chromium for the tests.
MSG
exit 1
