"""Neuron margin m = phi(chosen) - phi(rejected) (SPEC section 3) of two or more models on the same pairs.

    python scripts/neuron_margin.py PAIRS.jsonl NEURONS.json N MODEL_A MODEL_B [...]

N is a count of pairs from the start of the file, or a slice START:END (e.g. 64:105 for the pairs a
`limit_pairs: 64` training did not see). With YFPO_MARGIN_JSON=path the per-model results are also written there.

Teacher-forces prompt (chat template) + response + EOS for each pair, one sequence at a time, captures the
NeuronSet's activations with the trainer's NeuronCapture and prints the mean margin per model, and the paired
change of the last model against the first (Wilcoxon signed-rank). Used for issue 5's before/after check:
    python scripts/neuron_margin.py pairs.jsonl neurons.json 64 default runs/train64/final
"""

import json
import os
import statistics
import sys

import torch
from scipy.stats import wilcoxon

from yfpo.data.pairs import load_pairs
from yfpo.models import load_model
from yfpo.neurons.neuronset import NeuronSet
from yfpo.train.neuron_reward import NeuronCapture

pairs_path, neurons_path, n_arg = sys.argv[1], sys.argv[2], sys.argv[3]
models = sys.argv[4:]
start, _, end = n_arg.rpartition(":") if ":" in n_arg else ("0", "", n_arg)
pairs = load_pairs(pairs_path)[int(start or 0) : int(end) if end else None]
res = {}
for name in models:
    model, tok = load_model(name)
    model.eval()
    cap = NeuronCapture(model, NeuronSet.load(neurons_path, model))
    ms = []
    with torch.no_grad():
        for p in pairs:
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True
            )
            pi = tok(prompt, add_special_tokens=False)["input_ids"]
            phis = []
            for resp in (p.chosen, p.rejected):
                ri = tok(resp, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids = torch.tensor([pi + ri])
                mask = torch.tensor([[0] * len(pi) + [1] * len(ri)])
                with cap.window("policy"):
                    model(input_ids=ids)
                phis.append(float(cap.phi("policy", mask)[0]))
                cap.clear()
            ms.append(phis[0] - phis[1])
    res[name] = {
        "mean_margin": statistics.mean(ms),
        "sd": statistics.stdev(ms),
        "frac_positive": sum(m > 0 for m in ms) / len(ms),
        "per_pair": ms,
    }
    print(
        f"{name}: neuron margin mean {statistics.mean(ms):+.5f} (sd {statistics.stdev(ms):.5f}), positive on {sum(m > 0 for m in ms)}/{len(ms)} pairs",
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
