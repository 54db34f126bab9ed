"""Stage 1: the run's NeuronSet, the other selections the methods name, and the controls derived from the run's set
(random per training seed, flipped)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yfpo.config import to_dict
from yfpo.neurons.controls import derive_control
from yfpo.neurons.find import find_neurons
from yfpo.pipeline.node import Graph, Node, output_path, relative, resources
from yfpo.pipeline.plan import Plan


def run_find(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    cfg = dataclasses.replace(node.args["cfg"], out=str(folder / "neurons.json"))
    return {"neurons": relative(find_neurons(cfg), run_dir)}


def run_control(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    source = output_path(run_dir, deps["neurons"], "neurons")
    out = derive_control(node.args["kind"], source, folder / "neurons.json", seed=node.args["seed"])
    return {"neurons": relative(out, run_dir)}


def add(g: Graph, plan: Plan, mid: dict) -> dict[str, str]:
    """The NeuronSet nodes; returns {neuron key: node name} ("own" is the run's own set; other keys as
    yfpo.pipeline.config.neuron_key names them: lape, flipped, random-s0, ...)."""
    res = resources(plan.neurons.device)
    own = g.add(Node("neurons", "neurons", "stages/neurons-{hash}", to_dict(plan.neurons), {"model": mid}, run_find,
                     args={"cfg": plan.neurons}, resources=res))  # fmt: skip
    sets = {"own": own.name}
    for kind, cfg in plan.selections.items():
        node = Node(f"neurons/{kind}", "neurons_selection", "stages/neurons-{hash}", to_dict(cfg), {"model": mid},
                    run_find, args={"cfg": cfg}, resources=res)  # fmt: skip
        sets[kind] = g.add(node).name
    for key in plan.controls:
        kind, _, s = key.partition("-s")
        seed = int(s) if s else plan.neurons.seed
        node = Node(f"neurons/{key}", "neurons_control", f"stages/neurons-{kind}-{{hash}}", {"kind": kind, "seed": seed},
                    {"neurons": own.hash}, run_control, args={"kind": kind, "seed": seed}, deps=(own.name,))  # fmt: skip
        sets[key] = g.add(node).name
    return sets
