"""Training curves from metrics.jsonl: loss, DPO reward margin, neuron margin, accuracies (PNG)."""

from __future__ import annotations

from pathlib import Path

from yfpo.report.plots import smooth

PANELS = [
    ("loss", "loss"),
    ("rewards/margins", "DPO reward margin"),
    ("neuron/margin", "neuron margin m"),
    ("rewards/accuracies", "reward accuracy"),
    ("neuron/accuracy", "neuron accuracy (m > 0)"),
    ("fdt/hidden_diff_norm", "FDT |h_w - h_l|"),
]


def read_metrics(run_dir) -> list[dict]:
    from yfpo.utils import read_metrics as read_rows

    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (not a training run directory?)")
    return [r for r in read_rows(p) if "loss" in r]


def plot_runs(runs: list, out=None, labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(labels[i] if labels else Path(r).name, read_metrics(r)) for i, r in enumerate(runs)]
    panels = [(k, t) for k, t in PANELS if any(k in row for _, rows in data for row in rows)]
    n = len(panels)
    cols = 3 if n > 4 else 2
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.0 * rows_n), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for label, rows in data:
            pts = [(r["step"], float(r[key])) for r in rows if key in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            (line,) = ax.plot(xs, ys, alpha=0.25)
            ax.plot(xs, smooth(list(ys), 5), color=line.get_color(), label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if len(data) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out) if out else (Path(runs[0]) / "curves.png" if len(runs) == 1 else Path("curves.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    from yfpo.utils import atomic_savefig

    atomic_savefig(fig, out, dpi=110)
    plt.close(fig)
    return out
