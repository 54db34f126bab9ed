"""Neuron margin m = phi(chosen) - phi(rejected) (SPEC section 3) of two or more models on the same pairs.

    python scripts/neuron_margin.py PAIRS.jsonl NEURONS.json N MODEL_A MODEL_B [...]

N is a count of pairs from the start of the file, or a slice START:END (e.g. 64:105 for the pairs a
`limit_pairs: 64` training did not see). With YFPO_MARGIN_JSON=path the per-model results are also written there.

yfpo.eval.margin.neuron_margins does the measuring; this prints the mean margin per model, and the paired
change of the last model against the first (Wilcoxon signed-rank). Used for issue 5's before/after check:
    python scripts/neuron_margin.py pairs.jsonl neurons.json 64 default runs/train64/final
"""

import json
import os
import statistics
import sys

from scipy.stats import wilcoxon

from yfpo.data.pairs import load_pairs
from yfpo.eval.margin import neuron_margins, summarize
from yfpo.models import load_model

pairs_path, neurons_path, n_arg = sys.argv[1], sys.argv[2], sys.argv[3]
models = sys.argv[4:]
start, _, end = n_arg.rpartition(":") if ":" in n_arg else ("0", "", n_arg)
pairs = load_pairs(pairs_path)[int(start or 0) : int(end) if end else None]
res = {}
for name in models:
    model, tok = load_model(name)
    ms = neuron_margins(model, tok, neurons_path, pairs, allow_other_weights=True)  # trained models: the base's set
    res[name] = {**summarize(ms), "mean_margin": statistics.mean(ms), "per_pair": ms}
    print(
        f"{name}: neuron margin mean {statistics.mean(ms):+.5f} (sd {statistics.stdev(ms):.5f}), "
        f"positive on {sum(m > 0 for m in ms)}/{len(ms)} pairs",
        flush=True,
    )
a, b = res[models[0]]["per_pair"], res[models[-1]]["per_pair"]
d = [y - x for x, y in zip(a, b)]
print(
    f"paired change {models[-1]} - {models[0]}: mean {statistics.mean(d):+.5f}, increased on {sum(x > 0 for x in d)}/{len(d)} pairs"
)
print("Wilcoxon signed-rank p =", wilcoxon(d).pvalue)
if os.environ.get("YFPO_MARGIN_JSON"):
    with open(os.environ["YFPO_MARGIN_JSON"], "w") as f:
        json.dump({"pairs": pairs_path, "slice": n_arg, "n": len(pairs), "models": res}, f, indent=1)
