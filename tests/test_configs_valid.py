"""Every shipped config (configs/*.yaml) is not only parsed but validated: each stage config is built the way
`yfpo run` builds it (real config classes, the pipeline's own train_config) and checked by the stage's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from yfpo.config import from_dict
from yfpo.data.problems import BENCHMARKS, GROUPS
from yfpo.neurons.config import CheckConfig, NeuronsConfig
from yfpo.neurons.find import METHODS
from yfpo.pairs.config import PairsConfig
from yfpo.run import load_run_config, train_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
EVAL_EXTRA = {"discrimination", "mmlu"}


def test_configs_are_found():
    assert {"quick.yaml", "paper.yaml", "cpu_result.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path, tmp_path):
    rc = load_run_config(path)
    assert rc.methods and rc.seeds, f"{path.name}: methods and seeds must be non-empty"
    base = {"dtype": rc.dtype, "device": rc.device, "model": rc.model}
    ncfg = from_dict(NeuronsConfig, {**base, **rc.neurons, "model": rc.model}, prefix="neurons.")
    assert ncfg.method in METHODS, f"{path.name}: neurons.method {ncfg.method!r}"
    if rc.check is not None:
        from_dict(CheckConfig, {**base, **rc.check, "model": rc.model}, prefix="check.")
    if rc.pairs_file is None:
        pcfg = from_dict(PairsConfig, {**base, **rc.pairs, "model": rc.model}, prefix="pairs.")
        assert pcfg.k >= 2 or pcfg.gold_fallback, f"{path.name}: pairs.k < 2 without gold_fallback"
        assert pcfg.bench in BENCHMARKS or pcfg.bench_file, f"{path.name}: pairs.bench {pcfg.bench!r} unknown"
    for method in rc.methods:
        for seed in rc.seeds:
            tcfg = train_config(rc, method, seed, tmp_path / "pairs.jsonl", tmp_path / "neurons.json", tmp_path / "out")
            tcfg.validate()  # the trainer's own rules: fdt with lora, gamma without neurons, loss types, ...
    unknown = [b for b in rc.eval.benches if b not in BENCHMARKS and b not in GROUPS and b not in EVAL_EXTRA]
    assert not unknown, f"{path.name}: eval.benches {unknown} are not benchmarks"
