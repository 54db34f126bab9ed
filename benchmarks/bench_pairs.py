"""Pairs stage speed: sampling k solutions per question in one batched call per chunk of questions
(what `yfpo pairs build` does) vs one generate call per question (the naive peer), on the default model.

    .venv/bin/python benchmarks/bench_pairs.py [--questions 8 --k 4 --max-new-tokens 64 --reps 2]

Runs are interleaved (A, B, A, B, ...) because the machine is shared. Uses yfpo.engine.generate when present,
else transformers' `model.generate` (sampling, left padding) as the generation function.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

Gen = namedtuple("Gen", "text n_tokens truncated")


def hf_generate_fn(model, tok, batch_size):
    import torch

    def gen(prompts, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences, seed):
        torch.manual_seed(seed)
        tok.padding_side = "left"
        out = []
        per = max(1, batch_size // num_return_sequences)
        for i in range(0, len(prompts), per):
            enc = tok(prompts[i : i + per], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature,
                    top_p=top_p,
                    num_return_sequences=num_return_sequences,
                    pad_token_id=tok.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            for row in new:
                n = int((row != tok.pad_token_id).sum())
                out.append(Gen(tok.decode(row, skip_special_tokens=True), n, n >= max_new_tokens))
        return out

    return gen


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()

    from yfpo.models.loading import load_model
    from yfpo.pairs.build import build_pairs
    from yfpo.pairs.config import PairsConfig

    model, tok = load_model("default")
    try:
        from yfpo.engine.generate import generate

        def base_gen(prompts, **kw):
            return generate(model, tok, prompts, batch_size=a.batch_size, progress=False, **kw)

        backend = "yfpo.engine.generate"
    except ModuleNotFoundError:
        base_gen = hf_generate_fn(model, tok, a.batch_size)
        backend = "transformers generate (yfpo.engine.generate not present)"
    try:
        from yfpo.engine.prompts import build_prompt, format_user_message

        template = lambda q: build_prompt(tok, q)  # noqa: E731
    except ModuleNotFoundError:
        format_user_message = lambda q: q + "\nReason step by step and end with 'The answer is N.'"  # noqa: E731
        template = lambda q: tok.apply_chat_template(
            [{"role": "user", "content": format_user_message(q)}],  # noqa: E731
            tokenize=False,
            add_generation_prompt=True,
        )
    try:
        from yfpo.grading import is_correct
    except ImportError:
        import re

        def is_correct(o, g, kind="number"):
            n = re.findall(r"-?\d+(?:\.\d+)?", o.replace(",", ""))
            return bool(n) and float(n[-1]) == float(g)

    def per_question(prompts, **kw):  # the naive peer: one call per question
        out = []
        for p in prompts:
            out.extend(base_gen([p], **kw))
        return out

    times = {"batched (yfpo)": [], "per question": []}
    tokens = {}
    for r in range(a.reps):
        for name, fn in (("batched (yfpo)", base_gen), ("per question", per_question)):
            with tempfile.TemporaryDirectory() as d:
                cfg = PairsConfig(
                    out_dir=d,
                    limit=a.questions,
                    k=a.k,
                    max_new_tokens=a.max_new_tokens,
                    batch_size=a.batch_size,
                    progress=False,
                    seed=r,
                )
                t0 = time.perf_counter()
                build_pairs(
                    cfg,
                    generate_fn=fn,
                    template_fn=template,
                    message_fn=format_user_message,
                    grade_fn=lambda o, g: is_correct(o, g, "number"),
                )
                times[name].append(time.perf_counter() - t0)
                import json

                s = json.loads((Path(d) / "summary.json").read_text())
                tokens.setdefault(name, []).append(s["mean_sample_tokens"] * s["samples"])
    import torch

    print(
        f"pairs build: {a.questions} questions x k={a.k}, max_new_tokens={a.max_new_tokens}, batch {a.batch_size}, "
        f"torch threads {torch.get_num_threads()}, generation: {backend}"
    )
    print(f"{'variant':<16} {'median s':>9} {'tok/s':>8} {'ratio vs per-question':>22}")
    ref = statistics.median(times["per question"])
    for name, ts in times.items():
        med = statistics.median(ts)
        tps = statistics.median(tokens[name]) / med
        print(f"{name:<16} {med:>9.1f} {tps:>8.1f} {ref / med:>21.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
