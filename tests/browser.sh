#!/usr/bin/env bash
# The browser tests/test_html.py drives: Debian's Chromium and its driver (Selenium runs /usr/bin/chromium through
# /usr/bin/chromedriver; nothing is downloaded at test time). Part of the README's test command:
#   pip install -q -e ".[test]" && bash tests/browser.sh && python -m pytest -q
# Installs them with apt-get where that works (root, or sudo without a password); otherwise says why, and
# tests/test_html.py is skipped with that reason. Exit 0 either way: the other tests do not need a browser.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  why="apt-get is not available on this machine"
elif [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    && exit 0
  why="apt-get install chromium chromium-driver failed (see above)"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    chromium-driver >/dev/null && exit 0
  why="sudo apt-get install chromium chromium-driver failed (see above)"
else
  why="installing needs root (run: sudo apt-get install chromium chromium-driver)"
fi
echo "note: Chromium and chromedriver are not installed ($why): tests/test_html.py will be skipped" >&2
exit 0
