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


def _method_of(run: str) -> str:
    """'yfpo_random-s2' -> 'yfpo_random' (a run label without a seed is its own method)."""
    method, sep, seed = run.rpartition("-s")
    return method if sep and seed.isdigit() else run


def _palette(n: int) -> list:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, png: str | Path, dpi: int = 100) -> Path:
    from yfpo.utils import atomic_savefig

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, png, dpi=dpi)
    _plt().close(fig)
    return png


def method_colours(methods: Sequence[str]) -> dict:
    """One distinct colour per method, in the given order (the report passes the same map to every plot)."""
    return dict(zip(methods, _palette(len(methods))))


def training_curves(
    runs: dict[str, list[dict]], png: str | Path, keys=CURVES, labels=None, colours: dict | None = None
) -> Path | None:
    """One panel per metric (loss, reward margin, neuron margin, accuracies); one colour per method, each seed a
    thin line of its method's colour and the mean over seeds a thick one; integer steps; the legend (methods)
    in an empty panel or below the panels, never on a curve. runs: 'method-s<seed>' -> metrics rows. labels:
    method -> legend name; colours: method -> colour (default: method_colours in the order of `runs`).
    Metrics missing from every run are left out; None when nothing can be drawn.
    Long: matplotlib layout: panels, per-seed and mean lines, legend placement, one figure."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    present = [(k, t) for k, t in keys if any(k in r and r[k] is not None for rows in runs.values() for r in rows)]
    if not present:
        return None
    plt = _plt()
    methods = list(dict.fromkeys(_method_of(r) for r in runs))
    colour = method_colours(methods) | {m: c for m, c in (colours or {}).items() if m in methods}
    n = len(present)
    cols = min(3, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 2.7 * rows_n), squeeze=False)
    smoothed = any(len(r) // 20 > 1 for r in runs.values())  # the window below is len // 20
    seeds = {m: sum(1 for r in runs if _method_of(r) == m) for m in methods}
    for ax, (key, title) in zip(axes.flat, present):
        for method in methods:
            curves = []
            for run, rows in runs.items():
                if _method_of(run) != method:
                    continue
                pts = [(r.get("step", i), r[key]) for i, r in enumerate(rows) if r.get(key) is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ys = smooth(ys, max(1, len(ys) // 20))
                curves.append(dict(zip(xs, ys)))
                one = seeds[method] == 1  # a lone seed is the method's line: drawn full
                ax.plot(xs, ys, lw=1.6 if one else 0.7, alpha=1.0 if one else 0.45, color=colour[method], label=run)
            if len(curves) > 1:  # the mean over the seeds at the steps every seed logged
                steps = sorted(set.intersection(*(set(c) for c in curves)))
                if steps:
                    mean = [sum(c[s] for c in curves) / len(curves) for s in steps]
                    ax.plot(steps, mean, lw=2.0, color=colour[method], label=method)
        ax.set_title(title + (" (smoothed)" if smoothed else ""), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    names = [(labels or {}).get(m, m) for m in methods]
    handles = [Line2D([], [], color=colour[m], lw=2.0) for m in methods]
    note = "thin: one seed; thick: mean over seeds" if max(seeds.values()) > 1 else None
    if n < axes.size:  # an empty panel holds the legend (a figure legend, so it is outside every drawn panel)
        fig.tight_layout()
        box = axes.flat[n].get_position()
        fig.legend(
            handles,
            names,
            loc="upper left",
            bbox_to_anchor=(box.x0, box.y1),
            fontsize=9,
            frameon=False,
            title=note,
            title_fontsize=8,
            alignment="left",
        )
    else:
        ncol = min(len(names), 4)
        legend_rows = (len(names) + ncol - 1) // ncol
        bottom = (0.12 + (0.2 if note else 0) + 0.22 * legend_rows) / fig.get_figheight()  # room for the legend
        fig.tight_layout(rect=(0, bottom, 1, 1))
        fig.legend(
            handles,
            names,
            loc="lower center",
            ncol=ncol,
            fontsize=9,
            frameon=False,
            bbox_to_anchor=(0.5, 0),
            title=note,
            title_fontsize=8,
        )
    return _save(fig, png)


# chance accuracy where a benchmark has one (multiple choice with 4 options; a pair: 1 of 2)
CHANCE = {"mmlu_non_math": 0.25, "mmlu_redux_ok": 0.25, "mmlu": 0.25, "pair discrimination": 0.5}


def accuracy_panels(
    table: dict[str, dict[str, dict]],
    benches: Sequence[str],
    png: str | Path,
    chance: dict | None = None,
    colours: dict | None = None,
) -> Path | None:
    """Small multiples: one panel per benchmark, each on its own scale, methods as horizontal bars in the same
    order in every panel (labels on the left column), the per-item 95% CI as whiskers, the value at the bar's end,
    and chance as a dashed line where the benchmark has one. table[method][bench] = {"acc", "lo", "hi"}
    (fractions)."""
    methods = [m for m in table if any(b in table[m] for b in benches)]
    benches = [b for b in benches if any(b in table[m] for m in methods)]
    if not methods or not benches:
        return None
    chance = CHANCE if chance is None else chance
    plt = _plt()
    cols = min(3, len(benches))
    rows_n = (len(benches) + cols - 1) // cols
    h = 0.75 + 0.28 * len(methods)
    fig, axes = plt.subplots(rows_n, cols, figsize=(10.5, h * rows_n + 0.2), squeeze=False, sharey=True)
    colours = method_colours(methods) | {m: c for m, c in (colours or {}).items() if m in methods}
    ys = list(range(len(methods)))[::-1]  # first method on top
    for ax, b in zip(axes.flat, benches):
        top = 0.0
        for y, m in zip(ys, methods):
            c = table[m].get(b)
            if not c:
                continue
            acc = 100 * c["acc"]
            lo, hi = max(0.0, acc - 100 * c["lo"]), max(0.0, 100 * c["hi"] - acc)
            ax.barh(y, acc, height=0.7, color=colours[m], xerr=[[lo], [hi]], capsize=2, error_kw={"lw": 0.8})
            ax.text(acc + hi, y, f" {acc:.1f}", va="center", fontsize=7.5)
            top = max(top, acc + hi)
        ch = chance.get(b)
        if ch is not None:
            ax.axvline(100 * ch, ls="--", color="#444", lw=0.9)
            top = max(top, 100 * ch)
        ax.set_xlim(0, min(100.0, 1.18 * top + 1))
        ax.set_ylim(-0.6, len(methods) - 0.2)
        ax.set_title(b, fontsize=10)
        ax.set_xlabel("accuracy (%)" + (f"; dashed: chance {100 * ch:.0f}%" if ch is not None else ""), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys)
    axes[0][0].set_yticklabels(methods, fontsize=8.5)
    for ax in list(axes.flat)[len(benches) :]:
        ax.axis("off")
    for r in range(rows_n):  # labels on the left panel of every row (sharey keeps the order)
        axes[r][0].tick_params(labelleft=True)
    fig.tight_layout()
    return _save(fig, png)
