"""Fake stage functions inside Ray worker processes (not a test module): `install` is Ray's
worker_process_setup_hook in tests/test_run_ray.py. The stage modules' library functions become test_run_pipeline's
Fakes (the same files the in-process fakes write); each call is also recorded as a file in $YFPO_TEST_CALLS (the
workers are processes, so counts cannot live in memory), and a training named in $YFPO_TEST_KILL_TRAIN kills its
worker process once, after writing its first checkpoint."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from test_run_pipeline import STAGE_FUNCTIONS, Fakes

import yfpo.pipeline.stages.evaluate as st_eval


def record(kind: str) -> None:
    d = Path(os.environ["YFPO_TEST_CALLS"])
    (d / f"{kind}.{uuid.uuid4().hex}").write_text(str(os.getpid()))


def calls(d: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in d.iterdir():
        kind = p.name.rsplit(".", 1)[0]
        out[kind] = out.get(kind, 0) + 1
    return out


class RecordingFakes(Fakes):
    def train(self, cfg):
        tag = Path(cfg.output_dir).name.rsplit("-", 1)[0]
        record(f"train:{tag}")
        marker = Path(os.environ["YFPO_TEST_CALLS"]).parent / "killed"
        if os.environ.get("YFPO_TEST_KILL_TRAIN") == tag and not marker.exists():
            (Path(cfg.output_dir) / "checkpoint-1").mkdir(parents=True, exist_ok=True)  # mid-work: a checkpoint...
            marker.write_text(str(os.getpid()))
            os._exit(1)  # ...and the worker process dies before the training finishes
        return super().train(cfg)


def install() -> None:
    fakes = RecordingFakes()
    for kind, runner in fakes.runners().items():
        module, attr, adapt = STAGE_FUNCTIONS[kind]

        def call(*a, _f=adapt(runner), _k=kind, **kw):
            record(_k)
            return _f(*a, **kw)

        setattr(module, attr, call)
    st_eval.load_model = lambda path, **kw: (path, None)  # the fake discrimination runner takes the model path
