"""The causal check (when the run config has `check:`): ablate the run's neurons vs random ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yfpo.config import to_dict
from yfpo.neurons.check import causal_check
from yfpo.pipeline.node import Graph, Node, output_path, relative, resources
from yfpo.pipeline.plan import Plan


def run_check(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    neurons = output_path(run_dir, deps[node.deps[0]], "neurons")
    res = causal_check(dataclasses.replace(node.args["cfg"], neurons=str(neurons), out_dir=str(folder)))
    paths = {k: relative(v, run_dir) if Path(v).exists() else str(v) for k, v in (res.get("paths") or {}).items()}
    return {"paths": paths, "verdict_text": res.get("verdict_text")}


def add(g: Graph, plan: Plan, mid: dict, own: str) -> None:
    cfg = plan.check
    if cfg is None:
        return
    g.add(Node("check", "check", "stages/check-{hash}", to_dict(cfg), {"model": mid, "neurons": g[own].hash}, run_check,
               args={"cfg": cfg}, deps=(own,), resources=resources(cfg.device)))  # fmt: skip
