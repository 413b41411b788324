#!/usr/bin/env bash
# The run report's browser test (tests/test_report.py) renders the page in Debian's headless
# Chromium through chromedriver. Install both when they are missing and we may (root, apt-get);
# otherwise say so: the test then skips with the same reason. Never fails the build.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no chromium/chromedriver, and no root apt-get to install them: the browser test will skip"
  exit 0
fi
log=$(mktemp /tmp/tileseg-apt.XXXXXX.log)
echo "install_chromium: installing Debian's chromium and chromium-driver (log: $log)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
         chromium chromium-driver; } >"$log" 2>&1; then
  echo "install_chromium: apt-get failed (see $log): the browser test will skip"
fi
exit 0
