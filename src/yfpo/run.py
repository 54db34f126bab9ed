"""`yfpo run` moved to yfpo.pipeline; this module keeps the names scripts import from it."""

from yfpo.pipeline import (  # noqa: F401
    DEFAULT_METHODS,
    EvalSection,
    Plan,
    RunConfig,
    StageFailed,
    load_run_config,
    make_plan,
    model_identity,
    resolve_methods,
    run_pipeline,
    stage_hash,
)
from yfpo.pipeline.launch import check_launch, launch_training  # noqa: F401,E402
