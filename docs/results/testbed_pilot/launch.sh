#!/usr/bin/env bash
# Start (or resume) the testbed pilot in the background, on a frozen copy of the committed code.
#   bash docs/results/testbed_pilot/launch.sh [RUN [pilot.py options, e.g. --only UNIT,...]]   (from the checkout
#   root; RUN: /root/runs/testbed/pilot)
# The code at HEAD (src/ and pilot.py) is copied once to /root/runs/testbed/code-<sha>, so later edits of the
# checkout never change a running experiment; every unit resumes from RUN (see pilot.py), and the small outputs
# land in docs/results/testbed_pilot/ of this checkout (commit them). VENV: the python environment (/work/main/.venv);
# YFPO_DATA_DIR: the shared data folder (default: ../shared/data or ../../shared/data of the checkout).
set -euo pipefail
RUN=${1:-/root/runs/testbed/pilot}
VENV=${VENV:-/work/main/.venv}
# the data folder: YFPO_DATA_DIR, else ../shared/data of the checkout (a worktree's may be /work/shared/data)
if [ -z "${YFPO_DATA_DIR:-}" ]; then
  for d in "$PWD/../shared/data" "$PWD/../../shared/data"; do [ -d "$d" ] && YFPO_DATA_DIR=$(cd "$d" && pwd) && break; done
fi
[ -d "${YFPO_DATA_DIR:-}" ] || { echo "set YFPO_DATA_DIR to the shared data folder" >&2; exit 1; }
SHA=$(git rev-parse --short=10 HEAD)
FROZEN=/root/runs/testbed/code-$SHA
if [ ! -d "$FROZEN" ]; then
  mkdir -p "$FROZEN.tmp"
  git archive HEAD src docs/results/testbed_pilot/pilot.py | tar -x -C "$FROZEN.tmp"
  mv "$FROZEN.tmp" "$FROZEN"
fi
mkdir -p "$RUN"
echo "$(date -u +%FT%TZ) launch code $SHA" >> "$RUN/pilot.log"
nohup env YFPO_DATA_DIR="$YFPO_DATA_DIR" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false YFPO_NO_PROGRESS=1 \
  PYTHONPATH="$FROZEN/src" "$VENV/bin/python" "$FROZEN/docs/results/testbed_pilot/pilot.py" \
  --run "$RUN" --results "$PWD/docs/results/testbed_pilot" "${@:2}" >> "$RUN/driver.log" 2>&1 &
echo $! > "$RUN/driver.pid"
echo "pilot running as pid $(cat "$RUN/driver.pid"), code $FROZEN, log $RUN/pilot.log"
