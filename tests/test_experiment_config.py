"""configs/experiment.yaml (issue 12 draft) plans like any run: every stage config builds and validates from it."""

from pathlib import Path

from yfpo.pipeline import load_run_config, make_plan

CFG = Path(__file__).parents[1] / "configs" / "experiment.yaml"


def test_experiment_config_builds_every_stage_config():
    rc = load_run_config(CFG)
    assert len(rc.seeds) >= 3
    plan = make_plan(rc)
    assert {"dpo", "yfpo", "yfpo_random", "yfpo_flip", "dpo_half", "yfpo_half"} <= set(plan.methods)
    assert plan.methods["yfpo_random"]["neurons"] == "random" and plan.methods["yfpo_flip"]["neurons"] == "flipped"
    assert {tc.limit_pairs for tc in plan.train.values()} == {128, 256}


def test_session_sized_experiment_config_plans():
    """configs/experiment_cpu.yaml (the run behind docs/results/experiment_cpu): 3 methods x 3 seeds, random control."""
    rc = load_run_config(CFG.with_name("experiment_cpu.yaml"))
    plan = make_plan(rc)
    assert len(rc.seeds) == 3 and set(plan.methods) == {"dpo", "yfpo", "yfpo_random"}
    assert plan.methods["yfpo_random"]["neurons"] == "random" and len(plan.train) == 9
