"""configs/experiment.yaml (issue 12 draft) uses only keys that exist: every stage config builds from it."""

from pathlib import Path

from yfpo.config import from_dict
from yfpo.neurons.config import CheckConfig, NeuronsConfig
from yfpo.pairs.config import PairsConfig
from yfpo.run import load_run_config, train_config

CFG = Path(__file__).parents[1] / "configs" / "experiment.yaml"


def test_experiment_config_builds_every_stage_config(tmp_path):
    rc = load_run_config(CFG)
    assert len(rc.seeds) >= 3
    from_dict(NeuronsConfig, rc.neurons, prefix="neurons.")
    from_dict(CheckConfig, rc.check, prefix="check.")
    from_dict(PairsConfig, rc.pairs, prefix="pairs.")
    for method in rc.methods:
        tc = train_config(rc, method, 0, tmp_path / "pairs.jsonl", tmp_path / "neurons.json", tmp_path / method)
        assert tc.limit_pairs in (128, 256)
    assert {"dpo", "yfpo", "dpo_half", "yfpo_half"} <= set(rc.methods)
