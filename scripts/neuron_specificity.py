"""Markdown table comparing `yfpo neurons check` results of several NeuronSets (issue 12, item 2).

    python scripts/neuron_specificity.py NAME=CHECK_DIR [NAME=CHECK_DIR ...]

Per set: the zero-ablation NLL increase (nats/token) on math and contrast text, for the selected neurons and
the mean of the random draws with the same per-layer counts; the excess over random on each corpus; and
specificity = (math excess) - (contrast excess) with a 95% CI (normal, from the per-text excesses; the math
and contrast texts are different texts, so the two excesses are independent means).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _mean_se(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    v = sum((x - m) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(v / n)


def excess(res: dict, corpus: str) -> list[float]:
    """Per text: NLL increase of the selected ablation minus the mean increase of the random ablations."""
    per = res["per_item"]
    base = per["none"][f"{corpus}_nll"]
    draws = [d["name"] for d in res["random_draws"]]
    sel = per["selected"][f"{corpus}_nll"]
    return [
        (sel[i] - base[i]) - sum(per[d][f"{corpus}_nll"][i] - base[i] for d in draws) / len(draws)
        for i in range(len(base))
    ]


def row(name: str, res: dict, with_acc: bool = False) -> str:
    s, v = res["summary"], res["verdict"]
    rnd = [s[d["name"]] for d in res["random_draws"]]
    rdm = sum(x["delta_math_nll"][0] for x in rnd) / len(rnd)
    rdc = sum(x["delta_contrast_nll"][0] for x in rnd) / len(rnd)
    em, sem = _mean_se(excess(res, "math"))
    ec, sec = _mean_se(excess(res, "contrast"))
    spec, se = em - ec, math.sqrt(sem**2 + sec**2)
    counts = res["per_layer_counts"]
    acc = ""
    if with_acc:
        a = v["accuracy"]
        acc = f" {a['none']:.3f} / {a['selected']:.3f} / {sum(a['random']) / len(a['random']):.3f} |"
    return (
        f"| {name} | {res['n_neurons']} | {counts[0]} / {counts[-1]} | {s['selected']['delta_math_nll'][0]:+.3f} | "
        f"{rdm:+.3f} | {s['selected']['delta_contrast_nll'][0]:+.3f} | {rdc:+.3f} | {em:+.3f} | {ec:+.3f} | "
        f"{spec:+.3f} [{spec - 1.96 * se:+.3f}, {spec + 1.96 * se:+.3f}] | {em / ec if ec else float('nan'):.2f} |"
        + acc
    )


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    results = []
    for a in argv:
        name, _, d = a.partition("=")
        p = Path(d) / "check.json"
        if not p.exists():
            raise SystemExit(f"{p}: not found (run `yfpo neurons check --out_dir {d}` first)")
        results.append((name, json.loads(p.read_text())))
    with_acc = all("accuracy" in r["verdict"] for _, r in results)
    head = (
        "| criterion | neurons | layer 0 / 29 | dMath sel. | dMath rand. | dContr. sel. | dContr. rand. | "
        "math excess | contrast excess | specificity [95% CI] | excess ratio math/contr. |"
    )
    sep = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    if with_acc:
        head += " accuracy none / sel. / rand. |"
        sep += " ---: |"
    print(head)
    print(sep)
    for name, r in results:
        print(row(name, r, with_acc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
