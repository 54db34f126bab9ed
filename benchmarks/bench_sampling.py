#!/usr/bin/env python
"""Sampled generation at k samples per item: today's path (one item per generate call, its k samples one batch of k
rows, seeded by the item) vs per-prompt seeded sampling (generate(..., seeds=): many items per call, the engine's
token-filled batches of up to MAX_ROWS rows, each row on its own random stream).

Both sides sample the same ASDiv-A items with the same chat prompts, temperature, top-p, max_new_tokens and backend;
the new side is also run on more items (its batches are only full when there are enough of them). Reported per
side: generated tokens, wall seconds, this process's CPU seconds (one thread: the compute it needed; much less
sensitive than wall time to other jobs on a shared machine), tokens/s by both, and the ratio to today's path.
A second check: the new side's samples for the first items equal those of the same items generated alone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sampling.py --k 8 --n-today 12 --n-new 64 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from _machine import cpu as machine_cpu


class Clock:
    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--n-today", type=int, default=12, help="items through today's one-item-per-call path")
    ap.add_argument("--n-new", type=int, default=64, help="items through the seeded wide path")
    ap.add_argument("--bench", default="asdiv_a")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from yfpo.data.problems import load_benchmark
    from yfpo.engine.backends import resolve
    from yfpo.engine.common import sample_seed
    from yfpo.engine.generate import generate
    from yfpo.engine.prompts import build_prompt
    from yfpo.models.loading import load_model

    model, tok = load_model()
    probs = load_benchmark(a.bench, limit=max(a.n_today, a.n_new))
    prompts = [build_prompt(tok, p.question) for p in probs]
    seeds = [sample_seed(0, p.id) for p in probs]
    kw = dict(
        max_new_tokens=a.max_new_tokens,
        do_sample=True,
        temperature=a.temperature,
        top_p=a.top_p,
        num_return_sequences=a.k,
        backend=a.backend,
        progress=False,
    )
    used = resolve(a.backend, model).name
    generate(model, tok, prompts[:2], **{**kw, "max_new_tokens": 4})  # warm-up (kernel build, first calls)
    rows = {}
    with Clock() as c:
        toks = 0
        for p, s in zip(prompts[: a.n_today], seeds):  # today's eval/bench.py: one item per call
            toks += sum(g.n_tokens for g in generate(model, tok, [p], batch_size=max(16, a.k), seed=s, **kw))
    rows["today: one item per call"] = (a.n_today, toks, c)
    for n in sorted({a.n_today, a.n_new}):
        with Clock() as c:
            gens = generate(model, tok, prompts[:n], seeds=seeds[:n], **kw)
        rows[f"seeded: {n} items per call"] = (n, sum(g.n_tokens for g in gens), c)
    alone = [g for p, s in zip(prompts[:3], seeds) for g in generate(model, tok, [p], seeds=[s], **kw)]
    same = alone == gens[: 3 * a.k]

    name, flags = machine_cpu()
    print(f"machine: {name} ({', '.join(flags)}), {os.cpu_count()} CPUs, torch threads {a.threads}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, backend {a.backend} -> {used}")
    print(f"{a.bench}, k={a.k}, T={a.temperature}, top_p={a.top_p}, max_new_tokens={a.max_new_tokens}")
    base_w = base_c = None
    out = []
    print("| path | items | tokens | wall s | CPU s | tok/s wall | tok/s CPU | ratio (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, (n, toks, c) in rows.items():
        tw, tc = toks / c.wall, toks / c.cpu
        base_w, base_c = base_w or tw, base_c or tc
        print(f"| {label} | {n} | {toks} | {c.wall:.1f} | {c.cpu:.1f} | {tw:.1f} | {tc:.1f} | {tc / base_c:.2f}x |")
        out.append(dict(path=label, items=n, tokens=toks, wall_s=c.wall, cpu_s=c.cpu, tok_s_wall=tw, tok_s_cpu=tc))
    print(f"first 3 items' samples equal to generating each alone: {same}")
    print(f"load average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": name, "flags": flags, "args": vars(a), "rows": out, "alone_equal": same}, f)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
