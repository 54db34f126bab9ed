"""Config of the pairs stage (`yfpo pairs build`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yfpo.data.problems import check_benchmark_files

PAIR_MODES = ("default", "onpolicy")


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
    # default: the above. onpolicy: only questions the model sometimes solves (0 < correct samples < k) give pairs,
    # its own correct answers vs its own wrong ones (no gold, gold_fallback ignored); each question is sampled
    # from its own seed (generate's seeds=), so batch_size can be wide (e.g. 256 rows) and chunks never matter
    mode: str = "default"
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

    def validate(self, check_files: bool = False) -> "PairsConfig":
        """Refuse settings that cannot work, before any file is written; returns self. check_files: also the
        question file (bench_file, or the benchmark's data file) is on disk (`yfpo run` plans with it on)."""
        if check_files and self.bench_file and not Path(self.bench_file).exists():
            raise FileNotFoundError(f"pairs.bench_file {self.bench_file} does not exist")
        if check_files and not self.bench_file:
            check_benchmark_files([self.bench], self.data_dir, "pairs.bench")
        for name in ("k", "batch_size", "max_new_tokens", "step_rollouts", "step_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"pairs: {name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"pairs: limit must be >= 1 (or null for all questions), got {self.limit}")
        if self.offset < 0 or self.max_pairs_per_question < 1:
            raise ValueError("pairs: offset must be >= 0 and max_pairs_per_question >= 1")
        if self.temperature < 0:
            raise ValueError(f"pairs: temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"pairs: top_p must be in (0, 1], got {self.top_p}")
        if self.mode not in PAIR_MODES:
            raise ValueError(f"pairs: mode must be one of {', '.join(PAIR_MODES)}, got {self.mode!r}")
        if self.mode == "onpolicy" and self.k < 2:
            raise ValueError("pairs: mode onpolicy pairs the model's own answers: k must be >= 2")
        if self.k < 2 and not self.gold_fallback:
            raise ValueError("pairs: k must be >= 2 to pair samples with each other (or enable gold_fallback)")
        return self
