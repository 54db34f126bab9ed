"""Text table and per-layer plot of a NeuronSet."""

from __future__ import annotations

import os
from pathlib import Path

from yfpo.neurons.neuronset import NeuronSet


def summary_text(path: str | os.PathLike, top: int = 20) -> str:
    """Provenance line, per-layer counts and the `top` neurons by |score|."""
    ns = NeuronSet.load(path)
    p = ns.provenance
    L, W = ns.shape
    lines = [
        f"{path}: {len(ns)} neurons of {L} x {W} ({len(ns) / (L * W):.2%}); model {p.get('model')} "
        f"({p.get('family')}, weights {p.get('weight_hash')}); method {p.get('method')}, "
        f"selection {p.get('selection')}, k {p.get('k')}"
    ]
    corp = p.get("corpora") or {}
    if corp:
        lines.append(
            "corpora: "
            + "; ".join(f"{k} = {v['name']} (n={v['n']}, tokens={v.get('tokens')})" for k, v in corp.items() if v)
        )
    counts = ns.per_layer_counts()
    lines.append("per-layer counts: " + " ".join(f"L{i}:{c}" for i, c in enumerate(counts)))
    order = ns.scores.abs().argsort(descending=True)[:top]
    lines.append(f"{'rank':>4} {'layer':>5} {'index':>6} {'score':>11} {'act mean':>9} {'act std':>8}")
    for r, i in enumerate(order.tolist(), 1):
        lines.append(
            f"{r:>4} {int(ns.layers[i]):>5} {int(ns.indices[i]):>6} {float(ns.scores[i]):>11.3e} "
            f"{float(ns.mean[i]):>9.4f} {float(ns.std[i]):>8.4f}"
        )
    return "\n".join(lines)


def plot_layer_counts(path: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Bar chart of selected neurons per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = NeuronSet.load(path)
    counts = ns.per_layer_counts()
    fig, ax = plt.subplots(figsize=(max(5, len(counts) * 0.3), 3))
    ax.bar(range(len(counts)), counts, color="tab:blue")
    ax.set_xlabel("layer")
    ax.set_ylabel("selected neurons")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    model = str(ns.provenance.get("model"))
    model = (
        Path(model).name if "/" in model and Path(model).is_absolute() else model
    )  # a folder: not the machine's path
    ax.set_title(f"{len(ns)} neurons ({ns.provenance.get('method')}, {model})")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    from yfpo.utils import atomic_savefig

    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)
    return png
