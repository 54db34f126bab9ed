"""Reference log-probs (and m_ref of every NeuronSet the group's methods use), computed once per group of
(method, seed) with the same tokenization settings (REF_KEYS) and fed to every training of the group."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yfpo.neurons.neuronset import NeuronSet
from yfpo.pipeline.config import RunConfig, neuron_key, ref_settings
from yfpo.pipeline.node import Graph, Node, output_path, relative, resources
from yfpo.pipeline.plan import Plan
from yfpo.pipeline.stages.pairs import PairsInput
from yfpo.train.precompute import compute_reference
from yfpo.utils import stable_hash


def run_reference(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    pairs: PairsInput = node.args["pairs"]
    sets = {
        label: NeuronSet.load(output_path(run_dir, deps[name], "neurons")) for label, name in node.args["sets"].items()
    }
    probe = dataclasses.replace(node.args["tcfg"], pairs=str(pairs.path(deps, run_dir)), output_dir=str(folder))
    return {"ref_logps": relative(compute_reference(probe, neuron_sets=sets, out=folder / "reference.json"), run_dir)}


def needs_reference(plan: Plan, key: tuple[str, int]) -> bool:
    """Whether the training `key` reads a reference file (the run's reference stage runs, and it is not GRPO,
    whose reference, if beta > 0, is TRL's)."""
    return plan.ref_logps and plan.methods[key[0]].get("trainer") != "grpo"


def add(
    g: Graph, rc: RunConfig, plan: Plan, mid: dict, sets: dict[str, str], pairs: PairsInput
) -> dict[tuple[str, int], tuple[str, str]]:
    """The reference nodes; returns {(method, seed): (node name, reference id)}. A training's hash takes the
    reference id (model, pairs, settings), not the node's hash: adding a seed (a new random set in the file)
    recomputes the file but retrains nothing."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for key, tcfg in plan.train.items():
        if needs_reference(plan, key):
            settings = ref_settings(tcfg)
            groups.setdefault(stable_hash(settings, n=10), []).append(key)
    out = {}
    for gkey, members in groups.items():
        labels = sorted({neuron_key(plan.methods[m]["neurons"], seed) for m, seed in members})
        tcfg = plan.train[members[0]]
        settings = ref_settings(tcfg)
        inputs = {"model": mid, "pairs": pairs.hash, "neurons": {k: g[sets[k]].hash for k in labels}}
        node = Node(
            "reference" if len(groups) == 1 else f"reference/{gkey}",
            "reference",
            "stages/reference-{hash}",
            settings,
            inputs,
            run_reference,
            args={
                "tcfg": dataclasses.replace(tcfg, model=rc.model),
                "sets": {k: sets[k] for k in labels},
                "pairs": pairs,
            },
            deps=(*pairs.deps, *sorted({sets[k] for k in labels})),
            resources=resources(tcfg.device),
        )
        g.add(node)
        ref_id = stable_hash({"model": mid, "pairs": pairs.hash, "settings": settings}, n=10)
        out.update({member: (node.name, ref_id) for member in members})
    return out
