#!/usr/bin/env bash
# The GPU check (issue 31, item 6): run on a machine with an NVIDIA GPU, from the repository root:
#   bash scripts/gpu_check.sh [OUT]          # OUT defaults to runs/gpu_check; the table: OUT/gpu_check.md
# It sets up the CUDA torch build (scripts/setup.sh --cuda, plus --vllm when YFPO_GPU_CHECK_VLLM=1), then
#   1. the GPU facts (nvidia-smi, torch.cuda, bf16 support),
#   2. the test suite's GPU tests (pytest -m gpu: skipped on machines without CUDA),
#   3. the real-shape rehearsal (benchmarks/bench_scale.py) in bf16 on the GPU: Qwen2.5-0.5B, Llama-3.2-1B,
#      Qwen2.5-1.5B (random weights from configs/models/, every `yfpo run` stage at tiny limits),
#   4. configs/paper.yaml at tiny limits on the random-weight Qwen2.5-1.5B (its real shape; no hub access needed),
#   5. when vLLM imports: the vllm generation backend against HF greedy on the default model,
# and writes one Markdown table of what passed, with times and peak memory. Each step's log is in OUT/.
# Not yet run anywhere: no GPU has been available to this project (docs/scale.md says so until it has run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TABLE="$OUT/gpu_check.md"
export YFPO_NO_PROGRESS=1
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi sees no GPU; this check is for a CUDA machine" >&2
  exit 2
fi
bash scripts/setup.sh --cuda $([ "${YFPO_GPU_CHECK_VLLM:-0}" = 1 ] && echo --vllm) > "$OUT/setup.log" 2>&1 || {
  echo "gpu_check: setup failed (see $OUT/setup.log)" >&2
  exit 1
}
PY=.venv/bin/python
printf '| step | result | seconds | log |\n|---|---|---:|---|\n' > "$TABLE"

step() {  # step NAME COMMAND...: run it, log it, add a table row
  local name="$1"
  shift
  local log="$OUT/$(tr ' /' '__' <<<"$name").log"
  local t0=$SECONDS
  if "$@" > "$log" 2>&1; then res=passed; else res="FAILED ($?)"; fi
  printf '| %s | %s | %d | %s |\n' "$name" "$res" $((SECONDS - t0)) "$(basename "$log")" >> "$TABLE"
  echo "[gpu_check] $name: $res"
}

step "gpu facts" $PY -c "
import subprocess, torch
print(subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total,driver_version', '--format=csv'],
      capture_output=True, text=True).stdout)
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
assert torch.cuda.is_available(), 'torch does not see the GPU (CPU wheel installed?)'
print('bf16 supported', torch.cuda.is_bf16_supported())"
step "pytest -m gpu" $PY -m pytest -m gpu -ra
step "rehearsal bf16 cuda" $PY benchmarks/bench_scale.py --device cuda --dtypes bfloat16 \
  --models qwen2.5-0.5b llama-3.2-1b qwen2.5-1.5b --fdt on --work "$OUT/scale"
# paper.yaml on the real 1.5B shape at tiny limits (the random-weight model the rehearsal built)
step "paper.yaml tiny" .venv/bin/yfpo run configs/paper.yaml --model "$OUT/scale/models/qwen2.5-1.5b" \
  --out_root "$OUT/paper" --seeds 0 --neurons.n_math 8 --neurons.n_contrast 8 --check.n_math 8 \
  --check.n_contrast 8 --check.n_eval 4 --check.max_new_tokens 32 --check.n_random 1 --pairs.limit 4 \
  --pairs.max_new_tokens 64 --pairs_file "$OUT/scale/pairs.jsonl" --train.max_steps 2 --train.batch_size 4 \
  --train.max_length 256 --eval.limit 8 --eval.max_new_tokens 64 --eval.discrimination 8 \
  --eval.benches gsm8k,math500
if $PY -c "import vllm" 2>/dev/null; then
  step "vllm vs hf greedy" $PY - <<'EOF'
from yfpo.data.problems import load_benchmark
from yfpo.engine.generate import generate
from yfpo.engine.prompts import build_prompt
from yfpo.models import load_model

model, tok = load_model("default", device="cuda")
prompts = [build_prompt(tok, p.question) for p in load_benchmark("gsm8k")[:64]]
hf = generate(model, tok, prompts, max_new_tokens=128, backend="hf", batch_size=16)
vl = generate(model, tok, prompts, max_new_tokens=128, backend="vllm")
same = sum(a.text == b.text for a, b in zip(hf, vl))
print(f"vllm greedy outputs identical to HF: {same}/{len(prompts)}")
EOF
else
  printf '| vllm vs hf greedy | not run (vllm not installed; YFPO_GPU_CHECK_VLLM=1 installs it) | | |\n' >> "$TABLE"
fi
[ -f "$OUT/scale/results.jsonl" ] && $PY benchmarks/bench_scale.py --table "$OUT/scale/results.jsonl" >> "$TABLE"
echo "[gpu_check] table: $TABLE"
cat "$TABLE"
