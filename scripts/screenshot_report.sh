#!/usr/bin/env bash
# Renders RUN_DIR/report.html in headless Chromium and saves a full-page screenshot, to
# check that the page renders with every figure (Debian: apt-get install chromium).
# usage: scripts/screenshot_report.sh RUN_DIR OUT.png [HEIGHT]
set -euo pipefail
run_dir=$1; out=$2; height=${3:-6000}
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1100,"$height" --screenshot="$out" "file://$(realpath "$run_dir")/report.html" 2>/dev/null
rm -rf "$profile"
echo "wrote $out"
