"""Step-level (Step-DPO) pairs from an incorrect sample: find its first wrong step by rollouts.

For an incorrect solution split into steps s_1..s_n (one step a non-empty line), roll out `r` continuations
from each prefix s_1..s_i (i = 0..P-1, P = min(n, max_steps)) and grade them. The success rate of the
prefixes falls as the solution goes wrong; the first wrong step is the first step j whose prefix still
succeeds (rate > threshold) while the prefix including s_j does not (rate <= threshold; the full incorrect
sample counts as rate 0). The Step-DPO pair is then: shared prefix s_1..s_{j-1}, chosen = the first step
of a successful rollout from that prefix, rejected = s_j (Step-DPO, eq. 4 of the FDT text).
The rollouts are the expensive part: P * r generations per probed sample.
"""

from __future__ import annotations

from typing import Callable, Sequence


def split_steps(text: str) -> list[str]:
    """Solution text -> its steps (non-empty lines, stripped of surrounding whitespace)."""
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


def join_steps(steps: Sequence[str]) -> str:
    """Steps -> prefix text that a continuation can follow (each step ends with a newline)."""
    return "".join(s + "\n" for s in steps)


def first_wrong_step(rates: Sequence[float], n_steps: int, threshold: float = 0.0) -> int | None:
    """Index j (0-based) of the first wrong step, from rates[i] = success rate after the first i steps.

    `rates` covers prefixes 0..P-1; when P == n_steps the full (incorrect) solution closes the list with
    rate 0. None when the question fails from the empty prefix or no drop is seen in the probed range.
    """
    r = list(rates)
    if len(r) >= n_steps:
        r = r[:n_steps] + [0.0]
    if not r or r[0] <= threshold:
        return None
    for j in range(len(r) - 1):
        if r[j] > threshold and r[j + 1] <= threshold:
            return j
    return None


def _norm(s: str) -> str:
    return " ".join(s.split()).lower()


def step_pair(
    prompt: str,
    templated: str,
    sample_text: str,
    gold: str,
    *,
    generate_fn: Callable[..., list],
    grade_fn: Callable[[str, str], bool],
    n_rollouts: int = 4,
    max_steps: int = 8,
    max_new_tokens: int = 192,
    threshold: float = 0.0,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 0.95,
) -> tuple[dict | None, dict]:
    """One Step-DPO pair (or None) for an incorrect sample, plus what was measured.

    `prompt` is the user message stored in the pair, `templated` the chat-templated prompt the rollouts
    continue from; `generate_fn(prompts, **kw)` returns objects with .text and .truncated in prompt-major
    order; `grade_fn(full_solution, gold)` says whether a rollout reached the gold answer.
    """
    steps = split_steps(sample_text)
    info: dict = {"n_steps": len(steps), "rates": [], "first_wrong": None, "reason": None}
    if len(steps) < 1:
        info["reason"] = "no steps"
        return None, info
    P = min(len(steps), max_steps)
    prefixes = [join_steps(steps[:i]) for i in range(P)]
    gens = generate_fn(
        [templated + p for p in prefixes],
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=n_rollouts,
        seed=seed,
    )
    if len(gens) != P * n_rollouts:
        raise ValueError(f"step rollouts: expected {P * n_rollouts} generations, got {len(gens)}")
    rates, successes = [], []
    for i in range(P):
        ok = []
        for g in gens[i * n_rollouts : (i + 1) * n_rollouts]:
            good = (not g.truncated) and bool(g.text.strip()) and grade_fn(prefixes[i] + g.text, gold)
            ok.append(good)
            if good:
                successes.append((i, g.text))
        rates.append(sum(ok) / n_rollouts)
    info["rates"] = rates
    j = first_wrong_step(rates, len(steps), threshold)
    info["first_wrong"] = j
    if j is None:
        info["reason"] = "no success from the empty prefix" if rates[0] <= threshold else "no drop in probed steps"
        return None, info
    rejected = steps[j]
    for i, text in successes:
        if i != j:
            continue
        cand = split_steps(text)
        if cand and _norm(cand[0]) != _norm(rejected):
            pair = {
                "prompt": prompt,
                "initial_reason_steps": prefixes[j],
                "chosen": cand[0],
                "rejected": rejected,
                "answer": gold,
                "source": "step",
                "step_index": j,
                "step_rates": rates,
            }
            return pair, info
    info["reason"] = "no successful rollout with a different next step"
    return None, info
