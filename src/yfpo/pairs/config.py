"""Config of the pairs stage (`yfpo pairs build`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PairsConfig:
    """Sample k solutions per training question, grade them, pair correct with incorrect."""

    model: str = "default"  # alias, HF folder or hub id
    out_dir: str = "runs/pairs"  # writes samples.jsonl, pairs.jsonl, (step_pairs.jsonl), summary.json
    bench: str = "gsm8k_train"  # training questions (a benchmark name)
    bench_file: str | None = None  # or a user file in that benchmark's format
    limit: int | None = 64  # questions (None = all)
    offset: int = 0  # skip the first `offset` questions
    k: int = 4  # samples per question
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    max_new_tokens: int = 256
    batch_size: int = 16  # sequences per generation batch
    max_pairs_per_question: int = 2
    gold_fallback: bool = True  # no correct sample: gold solution (in the answer format) as chosen, source "gold"
    # Step-DPO pairs (optional, expensive): rollouts from each step prefix of an incorrect sample
    step_pairs: bool = False
    step_rollouts: int = 4  # rollouts per step prefix
    step_max_steps: int = 8  # only the first this many steps are probed
    step_max_new_tokens: int = 192
    step_samples_per_question: int = 1  # incorrect samples probed per question
    step_threshold: float = 0.0  # a prefix "fails" when its rollout success rate is <= this
    data_dir: str | None = None
    backend: str = "auto"  # generation backend (yfpo.engine.backends.BACKEND_NAMES: auto | hf | fast | ct2 | vllm ...)
    dtype: str = "float32"
    device: str = "cpu"
    progress: bool = True
