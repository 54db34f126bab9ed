"""Re-select a NeuronSet under every stage-1 criterion from one finished `yfpo neurons find` run (no model pass).

    python scripts/neuron_criteria.py RUN/neurons.json OUT_DIR [k]

Reads RUN/neurons_work/grids.pt (written by `yfpo neurons find` with method attnlrp/actgrad: per-corpus mean
and mean-of-squares relevance, activation statistics) and writes OUT_DIR/<criterion>/neurons.json for each of
yfpo.neurons.select.CRITERIA with the same k and selection mode, plus OUT_DIR/criteria.json: per-layer counts
and the overlap of every set with the `diff` set. Each set can then go through `yfpo neurons check`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from yfpo.neurons.find import work_dir_for
from yfpo.neurons.neuronset import NeuronSet
from yfpo.neurons.select import CRITERIA, criterion_score, select_top


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__)
        return 2
    base_path, out_dir = Path(argv[0]), Path(argv[1])
    base = NeuronSet.load(base_path)
    prov = base.provenance
    grids_path = work_dir_for(base_path) / "grids.pt"
    if not grids_path.exists():
        raise SystemExit(f"{grids_path}: not found (run `yfpo neurons find` with method attnlrp or actgrad first)")
    g = torch.load(grids_path)
    for key in ("relevance_math", "relevance_contrast", "relevance_sq_math", "relevance_sq_contrast"):
        if key not in g:
            raise SystemExit(
                f"{grids_path}: no {key!r} (written by a find run older than the criterion option; rerun find)"
            )
    k = float(argv[2]) if len(argv) == 3 else prov["k"]
    summary: dict = {"source": str(base_path), "k": k, "selection": prov["selection"], "sets": {}}
    ref = None
    for crit in CRITERIA:
        score = criterion_score(
            crit,
            g["relevance_math"],
            g["relevance_contrast"],
            math_sq_mean=g["relevance_sq_math"],
            contrast_sq_mean=g["relevance_sq_contrast"],
            n_math=int(g["n_math"]),
            n_contrast=int(g["n_contrast"]),
        )
        layers, indices = select_top(score, k, prov["selection"])
        p = dict(prov, criterion=crit, k=k, k_resolved=len(layers), derived_from=str(base_path))
        ns = NeuronSet(
            layers,
            indices,
            score[layers, indices],
            g["act_mean_math"][layers, indices],
            g["act_std_math"][layers, indices].clamp_min(1e-6),
            p,
        )
        path = out_dir / crit / "neurons.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        ns.save(path)
        keyset = set(zip(layers.tolist(), indices.tolist()))
        ref = keyset if ref is None else ref
        summary["sets"][crit] = {
            "path": str(path),
            "n": len(ns),
            "per_layer": ns.per_layer_counts(),
            "overlap_with_diff": len(keyset & ref),
            "mean_act_std": float(ns.std.mean()),
            "max_act_std": float(ns.std.max()),
        }
        print(
            f"{crit:13s} n={len(ns)} overlap with diff={len(keyset & ref)} "
            f"layers 0/29: {ns.per_layer_counts()[0]}/{ns.per_layer_counts()[-1]} max act std {float(ns.std.max()):.1f}"
        )
    (out_dir / "criteria.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
