#!/usr/bin/env bash
# Make headless Chromium available for the report test (tests/test_report.py).
# Installs the Debian package `chromium` when no chromium binary is on PATH and we can install packages
# (root, or passwordless sudo, with apt-get). Never fails the caller: when it cannot install, it says why
# and exits 0, and the browser test skips with that reason.
set -u
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "ensure_chromium: found $(command -v "$b")"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no chromium and no apt-get; the browser test will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "ensure_chromium: not root and no passwordless sudo; the browser test will be skipped" >&2
    exit 0
  fi
fi
echo "ensure_chromium: installing the Debian package chromium (one time)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
    echo "ensure_chromium: apt-get install chromium failed; the browser test will be skipped" >&2
    exit 0
  fi
fi
echo "ensure_chromium: installed $(command -v chromium)"
