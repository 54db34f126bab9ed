"""Held-out neuron margin m = phi(chosen) - phi(rejected) (SPEC section 3) of a model on preference pairs.

The measure YFPO trains on, read off pairs a training did not see: teacher-forced prompt (chat template) +
response + EOS, one sequence at a time, the NeuronSet's activations captured with the trainer's NeuronCapture
on the response tokens; `max_length` truncates like the trainer (keeping the prompt, cutting the response)."""

from __future__ import annotations

import statistics

import torch

from yfpo.data.pairs import Pair


def neuron_margins(
    model, tokenizer, neurons, pairs: list[Pair], max_length: int | None = None, allow_other_weights: bool = False
) -> list[float]:
    """Per pair, phi(chosen) - phi(rejected) under `model` with NeuronSet `neurons` (a path or a NeuronSet).
    allow_other_weights: the set was found on other weights (a trained model measured with its base's set)."""
    from yfpo.neurons.capture import NeuronCapture
    from yfpo.neurons.neuronset import NeuronSet

    ns = (
        neurons
        if isinstance(neurons, NeuronSet)
        else NeuronSet.load(neurons, model, allow_other_weights=allow_other_weights)
    )
    cap = NeuronCapture(model, ns)
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for p in pairs:
                prompt = tokenizer.apply_chat_template(
                    [{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True
                )
                pi = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                phis = []
                for resp in (p.chosen, p.rejected):
                    ri = tokenizer(resp, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                    if max_length is not None:
                        ri = ri[: max(1, max_length - len(pi))]
                    ids = torch.tensor([pi + ri])
                    mask = torch.tensor([[0] * len(pi) + [1] * len(ri)])
                    with cap.window("policy"):
                        model(input_ids=ids)
                    phis.append(float(cap.phi("policy", mask)[0]))
                    cap.clear()
                out.append(phis[0] - phis[1])
    finally:
        cap.remove()
    return out


def summarize(ms: list[float]) -> dict:
    """Mean, SD, standard error and share positive of per-pair margins."""
    n = len(ms)
    sd = statistics.stdev(ms) if n > 1 else 0.0
    return {
        "n": n,
        "mean": statistics.fmean(ms),
        "sd": sd,
        "se": sd / n**0.5 if n else float("nan"),
        "frac_positive": sum(m > 0 for m in ms) / n if n else float("nan"),
    }
