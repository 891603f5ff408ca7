#!/bin/sh
# Regenerates docs/console.png, the console screenshot in the README: the browser test runs a JavaScript program with
# an SVG chart and a table in the console (served on 127.0.0.1 in dev mode) and saves what Chromium shows.
# Needs Debian's chromium (/usr/bin/chromium).
set -eu
cd "$(dirname "$0")/.."
[ -x /usr/bin/chromium ] || { echo "console-screenshot: /usr/bin/chromium is missing (apt-get install chromium)" >&2; exit 1; }
WASMAGENT_CONSOLE_SCREENSHOT="$PWD/docs/console.png" \
    cargo test -p wasmagent-server --test console the_console_runs_javascript_and_python_and_shows_reports_and_cards
echo "wrote docs/console.png"
