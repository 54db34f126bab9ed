#!/usr/bin/env bash
# Look at report.html in a real browser: headless Chromium screenshots of the page.
#   scripts/report_screenshot.sh [RUN_DIR] [OUT_DIR]
# RUN_DIR: a `yfpo run` directory (default: a synthetic run in the documented schemas, built by
# tests/test_report_build.py::make_run). Writes OUT_DIR/report.png (full page, 1200 px wide) and
# OUT_DIR/report_narrow.png (700 px wide, to catch content overflowing sideways). Fails (non-zero) when
# Chromium is missing (`apt-get install -y chromium`), the report cannot be built or a screenshot is empty.
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
page="$out/report/report.html"
shoot() {  # width height file
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=3000 \
    --window-size="$1,$2" --screenshot="$3" "file://$page" >/dev/null 2>&1
  [ -s "$3" ] || { echo "report_screenshot: $3 was not written" >&2; exit 1; }
}
shoot 1200 6000 "$out/report.png"
shoot 700 9000 "$out/report_narrow.png"
echo "report_screenshot: $out/report.png $out/report_narrow.png (from $page)"
