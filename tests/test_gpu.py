"""On a CUDA machine (scripts/gpu_check.sh runs `pytest -m gpu`): a bf16 training on the GPU writes a loadable final/
with finite losses, and greedy generation on the GPU matches the CPU's first tokens; the vLLM backend's greedy
outputs are compared with HF's. Skipped where torch sees no GPU (this project's CPU machines and CI)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train_common import cfg_for, pair_rows, write_jsonl

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_bf16_training_on_the_gpu(tmp_path):
    from yfpo.models import load_model
    from yfpo.models.tiny import save_tiny
    from yfpo.train.trainer import train

    model_dir = save_tiny(tmp_path / "tiny", family="qwen2", seed=0, tie_word_embeddings=True)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    cfg = cfg_for(tmp_path, pairs, model=str(model_dir), device="cuda", dtype="bfloat16", fdt=True, max_steps=2)
    out = train(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    model, _ = load_model(str(out / "final"), dtype="bfloat16", device="cuda")
    assert next(model.parameters()).is_cuda


def test_greedy_generation_on_the_gpu_matches_the_cpu():
    from yfpo.engine.generate import generate
    from yfpo.models.tiny import tiny_model

    model, tok = tiny_model("llama", seed=0)
    prompts = ["Tina has 3 apples.", "What is 2 + 3?"]
    cpu = generate(model, tok, prompts, max_new_tokens=8, backend="hf", progress=False)
    gpu = generate(model.to("cuda"), tok, prompts, max_new_tokens=8, backend="hf", progress=False)
    assert [g.text for g in gpu] == [c.text for c in cpu]


def test_vllm_greedy_matches_hf(tmp_path):
    pytest.importorskip("vllm")
    from yfpo.engine.generate import generate
    from yfpo.models import load_model

    model, tok = load_model("default", device="cuda")
    prompts = ["What is 12 * 7? Answer briefly.", "Name the capital of France."]
    hf = generate(model, tok, prompts, max_new_tokens=32, backend="hf", progress=False)
    vl = generate(model, tok, prompts, max_new_tokens=32, backend="vllm", progress=False)
    assert [g.text for g in vl] == [g.text for g in hf]  # gpu_check.sh records the share on 64 GSM8K prompts
