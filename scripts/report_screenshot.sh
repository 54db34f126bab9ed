#!/usr/bin/env bash
# Look at report.html in a real browser: build the report, then scripts/check_report.py renders it in headless
# Chromium, fails on what a reader would trip over (overflow, unreadably small images, Python reprs, literal
# backticks) and writes screenshots.
#   scripts/report_screenshot.sh [RUN_DIR] [OUT_DIR]
# RUN_DIR: a `yfpo run` directory (default: a synthetic run in the documented schemas, built by
# tests/test_report_build.py::make_run). Writes OUT_DIR/report/ and OUT_DIR/shots/{top,figure-N,page}.png.
# Fails (non-zero) when Chromium is missing (`apt-get install -y chromium`), the report cannot be built or the
# check finds a problem.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python}"
out="${2:-$(mktemp -d)/report_screenshot}"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  echo "report_screenshot: no chromium on PATH (apt-get install -y chromium)" >&2
  exit 2
fi
if [ $# -ge 1 ] && [ -n "$1" ]; then
  run="$1"
else
  run="$out/run"
  rm -rf "$run" "$out/runs"
  PYTHONPATH="$here/src:$here/tests${PYTHONPATH:+:$PYTHONPATH}" "$py" - "$out" <<'PY'
import sys
from pathlib import Path
from test_report_build import make_run
run = make_run(Path(sys.argv[1]))
Path(sys.argv[1], "run").symlink_to(run)
PY
fi
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "$py" -m yfpo.cli report "$run" --out "$out/report"
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "$py" "$here/scripts/check_report.py" "$out/report/report.html" \
  --shots "$out/shots" --full-page
