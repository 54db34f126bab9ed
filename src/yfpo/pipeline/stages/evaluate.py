"""Stage 4: every benchmark (and pair discrimination, MMLU retention) of the base model and of every trained model.
A model's benchmarks form one group: the executor gives the ones not done yet to one generation pass
(yfpo.eval.bench.run_evals), each keeping its own folder, hash and done.json."""

from __future__ import annotations

import time
from pathlib import Path

from yfpo.config import to_dict
from yfpo.eval.bench import run_evals
from yfpo.eval.config import field_names as eval_field_names
from yfpo.eval.discrimination import run_discrimination
from yfpo.eval.mmlu import run_mmlu
from yfpo.models.loading import load_model
from yfpo.pipeline.config import _EVAL_KEY_DEFAULTS, RunConfig
from yfpo.pipeline.node import Graph, Node, output_path, resources
from yfpo.resume import file_identity
from yfpo.utils import stable_hash

# eval settings that are not part of a benchmark's hash (what to run, how to batch the non-generation units)
_NOT_HASHED = ("benches", "base", "discrimination_batch_size", "tasks", "mmlu", "mmlu_batch_size")


def model_path(node: Node, deps: dict, run_dir: Path) -> str:
    """The model a unit evaluates: the run's model (base) or the `final/` of the training it depends on."""
    return node.args["model"] if not node.deps else str(output_path(run_dir, deps[node.deps[0]], "final"))


def _outputs(s: dict) -> dict:
    prim = s.get("primary", "flexible")
    return {"accuracy": s["accuracy"][prim]["acc"], "n": s["n"], "primary": prim}


def _job(node: Node, folder: Path) -> dict:
    spec = node.args["spec"]
    return {"bench": node.args["bench"], "out_dir": str(folder), **({"spec": spec} if spec is not None else {})}


def run_bench(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    return _outputs(run_evals(model_path(node, deps, run_dir), [_job(node, folder)], **node.args["common"])[0])


def run_benches(items: list[tuple[Node, Path, dict]], run_dir: Path) -> list[tuple[dict, float]]:
    """The benchmarks of one model not done yet, in one pass over the model; each stage's time is its share (by
    generated tokens) of the whole call, model loading included."""
    t0 = time.time()
    node, _, deps = items[0]
    summaries = run_evals(model_path(node, deps, run_dir), [_job(n, f) for n, f, _ in items], **node.args["common"])
    wall, shares = time.time() - t0, [s.get("time_s") or 0.0 for s in summaries]
    return [
        (_outputs(s), wall * (x / sum(shares) if sum(shares) else 1 / len(shares))) for s, x in zip(summaries, shares)
    ]


def run_disc(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    a = node.args
    model, tok = load_model(model_path(node, deps, run_dir), dtype=a["dtype"], device=a["device"])
    d = run_discrimination(model, tok, limit=a["n"], out_dir=str(folder), batch_size=a["batch_size"])
    return {"accuracy": d["accuracy"], "n": d["n"]}


def run_mmlu_unit(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    a = node.args
    model, tok = load_model(model_path(node, deps, run_dir), dtype=a["dtype"], device=a["device"])
    m = run_mmlu(
        model, tok, per_subject=a["n"], out_dir=str(folder), data_dir=a["data_dir"], batch_size=a["batch_size"]
    )
    return {part: {"accuracy": m[part]["acc"], "n": m[part]["n"]} for part in ("non_math", "redux_ok")}


def add(g: Graph, rc: RunConfig, mid: dict, trained: dict[tuple[str, int], str]) -> None:
    """The evaluation units of the base model (eval.base) and of every training, in that order."""
    if rc.eval.base:
        add_model(g, rc, "base", None, {"model": mid}, None)
    for (method, seed), name in trained.items():
        add_model(g, rc, method, seed, {"train": g[name].hash}, name)


def add_model(g: Graph, rc: RunConfig, method: str, seed: int | None, m_in: dict, train_node: str | None) -> None:
    """Every benchmark (one group), discrimination and MMLU units of one model."""
    ev = rc.eval
    hashable = {
        k: v
        for k, v in to_dict(ev).items()
        if k not in _NOT_HASHED and not (k in _EVAL_KEY_DEFAULTS and v == _EVAL_KEY_DEFAULTS[k])
    }
    tag = "base" if seed is None else f"{method}-s{seed}"
    group = f"eval/{tag}-{stable_hash({'eval': hashable, 'in': m_in}, n=10)}"
    meta = {"method": method, "seed": seed}
    # the EvalConfig every benchmark of this model is evaluated under, as keyword settings (run_evals'), with the
    # run's dtype and device
    common = {k: getattr(ev, k) for k in eval_field_names() if k not in ("benches", "tasks", "hub", "overwrite")}
    common.update(dtype=rc.dtype, device=rc.device)
    specs = {name: (spec, path) for (name, spec), path in zip(ev.task_specs("eval.tasks").items(), ev.tasks)}
    deps = (train_node,) if train_node else ()
    model = rc.model if train_node is None else None
    res = resources(rc.device)
    for bench in [*ev.benches, *specs]:
        spec, spec_path = specs.get(bench, (None, None))
        task_in = {"task": file_identity(spec_path), "task_file": file_identity(spec.file)} if spec else {}
        g.add(Node(f"eval/{tag}/{bench}", "eval", f"{group}/{bench}", {**hashable, "bench": bench}, {**m_in, **task_in},
                   run_bench, args={"bench": bench, "spec": spec, "common": common, "model": model}, deps=deps,
                   meta={**meta, "bench": bench}, group=group, group_run=run_benches, resources=res))  # fmt: skip
    unit = {"dtype": rc.dtype, "device": rc.device, "model": model}
    if ev.discrimination:
        g.add(Node(f"eval/{tag}/discrimination", "discrimination", f"{group}/discrimination", {"n": ev.discrimination},
                   m_in, run_disc, args={**unit, "n": ev.discrimination, "batch_size": ev.discrimination_batch_size},
                   deps=deps, meta={**meta, "bench": "discrimination"}, resources=res))  # fmt: skip
    if ev.mmlu:
        g.add(Node(f"eval/{tag}/mmlu", "mmlu", f"{group}/mmlu", {"per_subject": ev.mmlu}, m_in, run_mmlu_unit,
                   args={**unit, "n": ev.mmlu, "batch_size": ev.mmlu_batch_size, "data_dir": ev.data_dir},
                   deps=deps, meta={**meta, "bench": "mmlu"}, resources=res))  # fmt: skip
