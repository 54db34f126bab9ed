"""Stage 3: one training per method x seed (the DPO-family trainer, or GRPO for `trainer: grpo`)."""

from __future__ import annotations

from pathlib import Path

from yfpo.config import to_dict
from yfpo.pipeline.config import RunConfig, neuron_key, train_config
from yfpo.pipeline.launch import launch_training
from yfpo.pipeline.node import Graph, Node, StageFailed, output_path, relative, resources
from yfpo.pipeline.plan import Plan
from yfpo.pipeline.stages.pairs import PairsInput
from yfpo.resume import file_identity
from yfpo.train.grpo import grpo
from yfpo.train.trainer import train


def run_train(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    a = node.args
    npath = output_path(run_dir, deps[a["neurons"]], "neurons")
    grpo_method = a["keys"].get("trainer") == "grpo"
    pairs_path = None if grpo_method else a["pairs"].path(deps, run_dir)
    ref = output_path(run_dir, deps[a["reference"]], "ref_logps") if a["reference"] else None
    tcfg = train_config(a["rc"], a["method"], a["keys"], a["seed"], pairs_path, npath, folder, ref)
    launch = a["rc"].launch
    if launch:  # accelerate launch on launch.num_processes processes, the global batch unchanged
        out = launch_training(tcfg, launch, "grpo" if grpo_method else "train")
    else:
        out = Path((grpo if grpo_method else train)(tcfg))
    final = out / "final"
    if not final.exists():
        raise StageFailed(f"stage {node.name}: {final} was not written; see {out}")
    return {"final": relative(final, run_dir), "run_dir": relative(out, run_dir)}


def add(
    g: Graph,
    rc: RunConfig,
    plan: Plan,
    mid: dict,
    sets: dict[str, str],
    pairs: PairsInput,
    refs: dict[tuple[str, int], tuple[str, str]],
) -> dict[tuple[str, int], str]:
    """A node per method x seed, in plan order; returns {(method, seed): node name}."""
    out = {}
    for (method, seed), probe in plan.train.items():
        keys = plan.methods[method]
        nnode = sets[neuron_key(keys["neurons"], seed)]
        ref = refs.get((method, seed))
        if keys.get("trainer") == "grpo":
            inputs = {"model": mid, "neurons": g[nnode].hash, "questions_file": file_identity(probe.questions_file)}
            deps = (nnode,)
        else:
            inputs = {
                "model": mid,
                "neurons": g[nnode].hash,
                "pairs": pairs.hash,
                **({"reference": ref[1]} if ref else {}),
            }
            deps = (nnode, *pairs.deps, *((ref[0],) if ref else ()))
        node = Node(
            f"train/{method}-s{seed}",
            "train",
            f"train/{method}-s{seed}-{{hash}}",
            # TrainConfig: its older flat form; GRPORunConfig: without an unset trl (hashes of older runs kept)
            probe.record() if hasattr(probe, "record") else to_dict(probe),
            inputs,
            run_train,
            args={
                "rc": rc,
                "method": method,
                "keys": keys,
                "seed": seed,
                "neurons": nnode,
                "pairs": pairs,
                "reference": ref[0] if ref else None,
            },  # fmt: skip
            deps=deps,
            meta={"method": method, "seed": seed, "neurons": keys["neurons"], "gamma": keys.get("gamma")},
            resources=resources(probe.device),
        )
        out[(method, seed)] = g.add(node).name
    return out
