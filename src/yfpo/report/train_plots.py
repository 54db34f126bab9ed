"""Training curves from metrics.jsonl: loss, DPO reward margin, neuron margin, accuracies (PNG)."""

from __future__ import annotations

from pathlib import Path

from yfpo.report.plots import training_curves

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
    """`yfpo plot-train RUN [RUN ...]`: the report's training curves (yfpo.report.plots.training_curves: one colour
    per method, runs named `<method>-s<seed>` drawn as seeds of it, integer steps, the legend outside the panels)
    for training folders, labelled by folder name unless `labels` are given."""
    data = {(labels[i] if labels else Path(r).name): read_metrics(r) for i, r in enumerate(runs)}
    out = Path(out) if out else (Path(runs[0]) / "curves.png" if len(runs) == 1 else Path("curves.png"))
    png = training_curves(data, out, keys=PANELS)
    if png is None:
        raise ValueError(f"plot-train: no metric of {', '.join(k for k, _ in PANELS)} in {', '.join(map(str, runs))}")
    return png
