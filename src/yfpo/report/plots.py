"""PNG plots of the report: training curves and the accuracy comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

CURVES = (
    ("loss", "loss"),
    ("rewards/margins", "DPO reward margin"),
    ("neuron/margin", "neuron margin"),
    ("rewards/accuracies", "reward accuracy"),
    ("neuron/accuracy", "neuron accuracy"),
    # GRPO methods (trainer: grpo): the verifiable and the neuron reward, completion length
    # (rewards/neuron/mean is ~0 by construction: phi is standardised within each group, so its raw mean is drawn)
    ("rewards/accuracy/mean", "GRPO accuracy reward"),
    ("neuron/phi", "GRPO phi (reward form)"),
    ("neuron/loss_term", "GRPO neuron loss term"),
    ("neuron/pair_margin", "GRPO phi margin +adv - -adv (loss form)"),
    ("completions/mean_length", "GRPO completion length"),
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (window 1 = unchanged)."""
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def training_curves(runs: dict[str, list[dict]], png: str | Path, keys=CURVES) -> Path | None:
    """One panel per metric (loss, reward margin, neuron margin, accuracies), one line per run label.
    Metrics missing from every run are left out; None when nothing can be drawn."""
    present = [(k, t) for k, t in keys if any(k in r and r[k] is not None for rows in runs.values() for r in rows)]
    if not present:
        return None
    plt = _plt()
    n = len(present)
    cols = min(3, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.0 * rows_n), squeeze=False)
    # one colour per run in every panel (a panel drawn only for the runs that log its metric keeps their colours)
    colour = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    for ax, (key, title) in zip(axes.flat, present):
        for label, rows in runs.items():
            pts = [(r.get("step", i), r[key]) for i, r in enumerate(rows) if r.get(key) is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            w = max(1, len(ys) // 20)
            ax.plot(xs, smooth(ys, w), label=label, lw=1.4, color=colour[label])
        ax.set_title(title + (" (smoothed)" if any(len(r) > 20 for r in runs.values()) else ""), fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    # the legend never sits on a curve: in the first empty panel, else beside the panels on the right
    from matplotlib.lines import Line2D

    names = list(runs)
    handles = [Line2D([], [], color=colour[n], lw=1.4) for n in names]
    if n < axes.size:
        axes.flat[n].legend(handles, names, fontsize=8, loc="upper left", frameon=False, ncol=1 + len(names) // 12)
        fig.tight_layout()
    else:
        fig.legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(0.86, 0.98), frameon=False)
        fig.tight_layout(rect=(0, 0, 0.85, 1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    from yfpo.utils import atomic_savefig

    atomic_savefig(fig, png, dpi=110)
    plt.close(fig)
    return png


def accuracy_bars(table: dict[str, dict[str, dict]], benches: Sequence[str], png: str | Path) -> Path | None:
    """Grouped bars: accuracy per method for each benchmark, with the per-item 95% CI as error bars.
    table[method][bench] = {"acc", "lo", "hi"} (fractions)."""
    methods = [m for m in table if any(b in table[m] for b in benches)]
    if not methods or not benches:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(benches) * len(methods) / 2 + 2), 3.4))
    width = 0.8 / len(methods)
    for mi, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for bi, b in enumerate(benches):
            c = table[m].get(b)
            if not c:
                continue
            xs.append(bi + mi * width)
            ys.append(100 * c["acc"])
            lo.append(max(0.0, 100 * (c["acc"] - c["lo"])))  # pooled-item CI vs the seed mean; rounding
            hi.append(max(0.0, 100 * (c["hi"] - c["acc"])))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=m)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(benches))])
    ax.set_xticklabels(benches)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, min(100, 1.1 * max([100 * c["hi"] for m in methods for c in table[m].values()] + [1])))
    # the legend sits outside the axes, to the right, so it never covers a bar or an error bar
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = Path(png)
    from yfpo.utils import atomic_savefig

    atomic_savefig(fig, png, dpi=110)
    plt.close(fig)
    return png
