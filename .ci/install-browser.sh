#!/usr/bin/env bash
# Installs Debian's Chromium for the browser test (tests/serve/test_demo_browser.py); idempotent.
# Playwright drives it via executable_path, so `playwright install` (a browser download) is never
# needed. Does nothing when /usr/bin/chromium already exists.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not found; install Chromium at /usr/bin/chromium yourself" \
         "(the browser test skips without it)." >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-browser: not root and no sudo; cannot install chromium" \
             "(the browser test will skip)." >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation
/usr/bin/chromium --version
