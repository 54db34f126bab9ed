"""`yfpo run`: the pipeline as a graph of stages (docs/ARCHITECTURE.md).

config.py    RunConfig (+ its eval section), methods -> one training config per method x seed
plan.py      every stage's config, built and validated by the stage itself
node.py      a stage node (kind, config, inputs -> hash, the function, resources) and the graph
graph.py     plan -> graph; one module per stage kind in stages/
store.py     the run directory: stage folders, locks, done.json, run.json (knows no stage)
executors/   local (this process; --workers N) and ray (a task per node)
runner.py    run_pipeline: plan -> graph -> executor -> report
cli.py       `yfpo run`
"""

from yfpo.pipeline.config import DEFAULT_METHODS, EvalSection, RunConfig, load_run_config, resolve_methods
from yfpo.pipeline.node import StageFailed, model_identity, stage_hash
from yfpo.pipeline.plan import Plan, make_plan
from yfpo.pipeline.runner import run_pipeline

__all__ = [
    "DEFAULT_METHODS",
    "EvalSection",
    "Plan",
    "RunConfig",
    "StageFailed",
    "load_run_config",
    "make_plan",
    "model_identity",
    "resolve_methods",
    "run_pipeline",
    "stage_hash",
]
