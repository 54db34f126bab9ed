"""The plan: every stage's config built from the run config and validated by the stage's own `validate()` before any
work (unknown keys, wrong types, invalid combinations, unknown benchmarks and missing files all fail here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yfpo.config import from_dict
from yfpo.neurons.config import CheckConfig, NeuronsConfig
from yfpo.neurons.controls import SELECTIONS, kind_of_method, selection_method
from yfpo.pairs.config import PairsConfig
from yfpo.pipeline.config import RunConfig, neuron_key, resolve_methods, train_config


@dataclass
class Plan:
    """Every stage's config, built and validated before any work (nothing is written while planning)."""

    methods: dict[str, dict[str, Any]]  # resolved: gammas expanded, neurons and gamma explicit
    neurons: NeuronsConfig  # the run's own set
    selections: dict[str, NeuronsConfig]  # other selection kinds a method uses
    controls: list[str]  # neuron keys derived from the run's set: "flipped", "random-s<seed>"
    check: CheckConfig | None
    pairs: PairsConfig | None  # None with pairs_file
    train: dict[tuple[str, int], Any]  # (method, seed) -> TrainConfig / GRPORunConfig (placeholder paths)
    ref_logps: bool  # the shared reference stage runs


def _validated(cfg):
    try:
        return cfg.validate(check_files=True) if isinstance(cfg, PairsConfig) else cfg.validate()
    except (ValueError, FileNotFoundError) as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith("run config:") else f"run config: {msg}") from None


def make_plan(rc: RunConfig) -> Plan:
    """Build every stage's config from the run config and have each validate itself."""
    rc.validate()
    base = {"dtype": rc.dtype, "device": rc.device, "model": rc.model}
    ncfg = _validated(from_dict(NeuronsConfig, {**base, **rc.neurons, "model": rc.model}, prefix="neurons."))
    if ncfg.method not in SELECTIONS.values():
        raise ValueError(
            f"run config: neurons.method {ncfg.method!r} is not a selection; for a random-neuron "
            "control give a method `neurons: random`"
        )
    methods = resolve_methods(rc)
    selections, controls = needed_neuron_sets(ncfg, methods, rc.seeds)
    ccfg = None
    if rc.check is not None:
        ccfg = from_dict(CheckConfig, {**base, **rc.check, "model": rc.model}, prefix="check.")
    pcfg = None
    if not rc.pairs_file:
        pcfg = _validated(from_dict(PairsConfig, {**base, **rc.pairs, "model": rc.model}, prefix="pairs."))
    placeholder = Path("<planned>")
    train = {
        (m, seed): train_config(
            rc, m, keys, seed, placeholder, placeholder, placeholder, placeholder if rc.ref_logps else None
        )
        for m, keys in methods.items()
        for seed in rc.seeds
    }
    rc.eval.validate()
    for (m, _seed), cfg in train.items():
        if hasattr(cfg, "check_eval_overlap"):  # GRPO draws its own questions: not from the evaluated slice
            try:
                cfg.check_eval_overlap(rc.eval.benches, rc.eval.limit)
            except ValueError as e:
                raise ValueError(f"run config: methods.{m} (trainer: grpo) {e}") from None
    return Plan(methods, ncfg, selections, controls, ccfg, pcfg, train, rc.ref_logps)


def needed_neuron_sets(ncfg, methods: dict[str, dict], seeds: list[int]) -> tuple[dict[str, Any], list[str]]:
    """The NeuronSets the methods name besides the run's own: other selections ({kind: NeuronsConfig}, the
    run's neurons section with another method) and derived controls (["flipped", "random-s<seed>", ...])."""
    own = kind_of_method(ncfg.method)
    selections: dict[str, Any] = {}
    controls: list[str] = []
    for keys in methods.values():
        kind = keys["neurons"]
        if kind in SELECTIONS and kind != own and kind not in selections:
            selections[kind] = dataclasses.replace(ncfg, method=selection_method(kind))
        elif kind == "flipped" and "flipped" not in controls:
            controls.append("flipped")
        elif kind == "random":
            controls += [k for k in (neuron_key("random", s) for s in seeds) if k not in controls]
    return selections, controls
