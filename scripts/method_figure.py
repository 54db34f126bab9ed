"""Draw docs/method.png, the README's figure of YFPO: math neurons -> neuron margin -> a reward inside the DPO logit.

python scripts/method_figure.py [docs/method.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {  # name: (x, y, width, height, text, colour)
    "pair": (0.2, 2.35, 2.3, 1.0, "preference pair\nprompt x, chosen y_w,\nrejected y_l", "#eeeeee"),
    "fwd": (3.2, 2.35, 2.5, 1.0, "one policy forward pass\n(and the reference's)", "#eeeeee"),
    "logp": (6.5, 3.55, 2.9, 1.0, "log-probabilities\nβ·[logratio(y_w) − logratio(y_l)]", "#dbe9f6"),
    "neurons": (3.2, 0.25, 2.5, 1.25, "math neurons N\n(AttnLRP on math vs\ncontrast text; a file)", "#fde2c8"),
    "phi": (
        6.5,
        1.15,
        2.9,
        1.25,
        "MLP activations of N\nφ(x, y) = mean s·(u − μ)/σ\nm = φ(y_w) − φ(y_l), / std(m_ref)",
        "#fde2c8",
    ),
    "loss": (10.2, 2.35, 3.1, 1.0, "−log σ( β·Δlogratio + γ·m )\nthe DPO logit + neuron reward", "#d9f0d3"),
}
ARROWS = [("pair", "fwd"), ("fwd", "logp"), ("fwd", "phi"), ("neurons", "phi"), ("logp", "loss"), ("phi", "loss")]


def _anchor(box, towards):
    x, y, w, h = box[:4]
    tx, ty, tw, th = towards[:4]
    cx, cy, tcx, tcy = x + w / 2, y + h / 2, tx + tw / 2, ty + th / 2
    if abs(tcx - cx) > abs(tcy - cy) * 1.5 or tx > x + w or tx + tw < x:  # mostly sideways
        return (x + w if tcx > cx else x, cy)
    return (cx, y + h if tcy > cy else y)


def draw(png: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10.5, 3.4))
    for x, y, w, h, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.06", fc=colour, ec="#555", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5)
    for a, b in ARROWS:
        ax.add_patch(
            FancyArrowPatch(
                _anchor(BOXES[a], BOXES[b]),
                _anchor(BOXES[b], BOXES[a]),
                arrowstyle="-|>",
                mutation_scale=12,
                color="#444",
                lw=1.1,
            )
        )
    ax.set_xlim(0, 13.5)
    ax.set_ylim(0, 4.8)
    ax.axis("off")
    fig.tight_layout(pad=0.2)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


if __name__ == "__main__":
    print(draw(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/method.png")))
