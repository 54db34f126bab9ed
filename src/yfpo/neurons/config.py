"""Configs of the neuron stage (find, check)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yfpo.data.corpora import CONTRAST_SOURCES

METHODS = ("attnlrp", "actgrad", "lape", "random")  # how `yfpo neurons find` scores neurons


@dataclass
class NeuronsConfig:
    """`yfpo neurons find`: score every neuron on a math and a contrast corpus, write a NeuronSet."""

    model: str = "default"  # alias, HF folder or hub id
    out: str = "runs/neurons/neurons.json"  # the NeuronSet file; work files go beside it
    method: str = "attnlrp"  # attnlrp | actgrad (activation x gradient) | lape (activation probability) | random
    n_math: int = 128
    n_contrast: int = 128
    math_split: str = "train"  # GSM8K split of the math corpus
    contrast_sources: str = "self_instruct,dolly"
    k: float = 0.01  # count (>= 1) or fraction of all neurons (< 1); per layer: of the width
    selection: str = "global"  # global | per_layer
    # attnlrp/actgrad: what "math-specific" means (neurons/select.py criterion_score): diff (mean math minus
    # mean contrast, the SPEC default) | tstat (Welch t over samples) | ratio (diff / (|contrast| + median))
    # | exclude_both (diff, never picking neurons in the top (1 - exclude_quantile) of |relevance| on both corpora)
    criterion: str = "diff"
    exclude_quantile: float = 0.99
    match: str | None = None  # method=random: NeuronSet whose per-layer counts to copy
    seed: int = 0
    batch_size: int = 4
    max_length: int = 256
    data_dir: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    progress: bool = True

    def validate(self) -> "NeuronsConfig":
        """A known method, known contrast corpora, and the `match` file (if any) on disk; returns self."""
        if self.method not in METHODS:
            raise ValueError(f"neurons.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for src in (x.strip() for x in self.contrast_sources.split(",") if x.strip()):
            if src not in CONTRAST_SOURCES:
                raise ValueError(
                    f"neurons.contrast_sources: unknown source {src!r}; known: {', '.join(CONTRAST_SOURCES)}"
                )
        if self.match and not Path(self.match).exists():
            raise FileNotFoundError(f"neurons.match {self.match} does not exist")
        return self


@dataclass
class CheckConfig:
    """`yfpo neurons check`: ablate the selected neurons vs random neurons of the same per-layer counts."""

    neurons: str = "runs/neurons/neurons.json"
    model: str | None = None  # default: the model named in the NeuronSet provenance
    out_dir: str | None = None  # default: <neurons file dir>/check
    ablation: str = "zero"  # zero | mean (the NeuronSet's activation mean)
    n_random: int = 3
    n_math: int = 64  # held-out GSM8K *test* solutions for math NLL
    n_contrast: int = 64  # contrast texts (other seed than find's) for contrast NLL
    n_eval: int = 30  # problems of `eval_bench` for greedy accuracy (0 = NLL only)
    eval_bench: str = "gsm8k"  # any yfpo.eval benchmark; mawps_singleop suits models near 0% on GSM8K
    max_new_tokens: int = 256
    seed: int = 1
    batch_size: int = 8
    max_length: int = 256
    data_dir: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    progress: bool = True
