"""Control NeuronSets for the neuron reward (SPEC section 3, "Controls"): which neurons a method's reward uses.

An effect of the YFPO reward means something only against controls. A training method names its neurons
with one of KINDS:

- ``attnlrp``  : the AttnLRP selection (stage 1's default);
- ``gradxact`` : the plain activation x gradient selection (stage 1's ``actgrad`` baseline);
- ``lape``     : the activation-probability selection (stage 1's ``lape`` baseline);
- ``random``   : random neurons with the source set's per-layer counts, disjoint from it, seeded; each layer
                 keeps the source set's signs (shuffled within the layer), so only *which* neurons differs;
- ``flipped``  : the source set's neurons with every sign reversed (an anti-math reward).

The first three are selections, made by ``yfpo neurons find`` with another ``method`` (selection_method).
The last two are derived from a found set without a model (derive_control): random neurons take their
activation mean/std from the find run's per-neuron grids (grids.pt, the same corpus pass and positions as the
source set's own statistics), so the control is standardised exactly like the set it replaces.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yfpo.neurons.neuronset import NeuronSet, NeuronSetError

SELECTIONS = {"attnlrp": "attnlrp", "gradxact": "actgrad", "lape": "lape"}  # kind -> NeuronsConfig.method
DERIVED = ("random", "flipped")
KINDS = tuple(SELECTIONS) + DERIVED
ALIASES = {"actgrad": "gradxact"}  # stage 1's method name is accepted too


def normalise_kind(kind: str, where: str = "neurons") -> str:
    """The canonical kind name; a clear error for anything else."""
    k = ALIASES.get(str(kind), str(kind))
    if k not in KINDS:
        raise ValueError(f"{where}: {kind!r} is not a neuron set; choose one of {', '.join(KINDS)}")
    return k


def selection_method(kind: str) -> str:
    """NeuronsConfig.method that makes the selection `kind` (attnlrp, gradxact, lape)."""
    kind = normalise_kind(kind)
    if kind not in SELECTIONS:
        raise ValueError(f"neurons {kind!r} is derived from a found set (derive_control), not a selection")
    return SELECTIONS[kind]


def kind_of_method(method: str) -> str:
    """The kind name of a stage-1 method (attnlrp -> attnlrp, actgrad -> gradxact, lape -> lape)."""
    for k, m in SELECTIONS.items():
        if m == method:
            return k
    raise ValueError(
        f"neurons method {method!r} has no control kind (expected one of {', '.join(SELECTIONS.values())})"
    )


def flipped(source: NeuronSet) -> NeuronSet:
    """The same neurons and statistics, every sign reversed."""
    prov = _control_provenance(source, "flipped", None, "the source set's scores negated (signs reversed)")
    return NeuronSet(source.layers, source.indices, -source.scores, source.mean, source.std_raw, prov)


def random_matched(source: NeuronSet, act_mean: torch.Tensor, act_std: torch.Tensor, seed: int) -> NeuronSet:
    """Random neurons: per layer as many as `source` has there, none of source's, drawn with `seed`; each
    layer's signs are the source's signs of that layer in a seeded order. `act_mean` / `act_std` are the (L, W)
    activation grids of the pass that gave the source set its statistics."""
    from yfpo.neurons.select import select_random

    L, W = source.shape
    if tuple(act_mean.shape) != (L, W) or tuple(act_std.shape) != (L, W):
        raise NeuronSetError(f"random control: activation grids are {tuple(act_mean.shape)}, the set is {L} x {W}")
    layers, indices = select_random(source.per_layer_counts(), W, seed, exclude=(source.layers, source.indices))
    g = torch.Generator().manual_seed(int(seed) + 1)
    signs = torch.empty(len(layers))
    src_signs = source.signs
    for layer in range(L):
        mine = (layers == layer).nonzero().flatten()
        if len(mine):
            theirs = src_signs[source.layers == layer]
            signs[mine] = theirs[torch.randperm(len(theirs), generator=g)]
    prov = _control_provenance(
        source, "random", seed, "none (random neurons): +1/-1 carries the sign, copied per layer from the source set"
    )
    return NeuronSet(layers, indices, signs, act_mean[layers, indices], act_std[layers, indices].clamp_min(1e-6), prov)


def derive_control(kind: str, source_path: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write the `kind` control ('random' or 'flipped') of the NeuronSet at `source_path` to `out`."""
    from yfpo.neurons.find import work_dir_for

    kind = normalise_kind(kind)
    if kind not in DERIVED:
        raise ValueError(
            f"derive_control: {kind!r} is a selection; make it with `yfpo neurons find --method {SELECTIONS[kind]}`"
        )
    source = NeuronSet.load(source_path)
    source.provenance["source_path"] = str(source_path)
    if kind == "flipped":
        ns = flipped(source)
    else:
        grids_path = work_dir_for(source_path) / "grids.pt"
        if not grids_path.exists():
            raise FileNotFoundError(
                f"random control of {source_path}: its find run's activation grids {grids_path} "
                "are missing; rerun `yfpo neurons find` for that set, or use "
                "`yfpo neurons find --method random --match SET`"
            )
        grids = torch.load(grids_path)
        ns = random_matched(source, grids["act_mean_math"], grids["act_std_math"], seed)
    return ns.save(out)


def _control_provenance(source: NeuronSet, kind: str, seed: int | None, score: str) -> dict:
    from yfpo.utils import now

    keep = {k: v for k, v in source.provenance.items() if k not in ("sigma_floor", "source_path", "control")}
    return {
        **keep,
        "method": f"control:{kind}",
        "score": score,
        "date": now(),
        "control": {
            "kind": kind,
            "seed": seed,
            "source": source.provenance.get("source_path"),
            "source_method": source.provenance.get("method"),
            "source_n": len(source),
        },
    }
