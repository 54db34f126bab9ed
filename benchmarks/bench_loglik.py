"""Teacher-forced scoring cost (pair discrimination, MMLU, the causal check's NLL share this path): LM head on the
read positions only (yfpo.eval.loglik._Scorer), with and without the prompt shared by a pair's two responses
(one packed row: prompt once, then chosen and rejected; today's path), against full logits (the model's own
forward over every position, one row per response: the earlier path and the peer).

Same model, same pairs (the default discrimination pairs: ../shared/data/gsm8k_model_solution_pairs), same
batching (right-padded, longest first). Time: the two paths interleaved, a fresh order every round, median over
`--rounds` after one warm-up; wall and process CPU time (on a shared machine CPU time is the steadier). Peak memory:
each path alone in a fresh subprocess (load + one scoring pass), VmHWM above the level after loading.
"identical": max |difference| of the per-pair length-normalised scores and whether every pair's decision agrees.

    .venv/bin/python benchmarks/bench_loglik.py [--model default] [--pairs 32] [--batch 8] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import time

import torch
from _machine import cpu as machine_cpu

PATHS = {
    "full": "full logits, a row per response (earlier path, peer)",
    "head": "LM head on read positions, a row per response",
    "shared": "LM head on read positions, prompt shared by the pair (today)",
}


def _vm(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def score(model, tok, pairs, path: str, batch: int):
    """yfpo.eval.discrimination on `pairs` with the scoring path forced: [(chosen score, rejected score)]."""
    import functools
    import tempfile

    import yfpo.eval.discrimination as disc
    import yfpo.eval.loglik as ll

    orig, orig_lp = ll._Scorer.__init__, disc.response_logprobs

    def init(self, m):
        orig(self, m)
        if path == "full":
            self.fast = False

    ll._Scorer.__init__ = init
    if path != "shared":
        disc.response_logprobs = functools.partial(orig_lp, share_prompts=False)
    try:
        with tempfile.TemporaryDirectory() as d:
            disc.run_discrimination(model, tok, pairs, batch_size=batch, progress=False, out_dir=d)
            items = [json.loads(x) for x in open(f"{d}/items.jsonl")]
    finally:
        ll._Scorer.__init__, disc.response_logprobs = orig, orig_lp
    return [(r["chosen_score"], r["rejected_score"]) for r in items]


def load(args):
    from yfpo.data.pairs import load_solution_pairs
    from yfpo.models import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype="float32", device="cpu")
    model.eval()
    return model, tok, load_solution_pairs(limit=args.pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-only", choices=list(PATHS), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    model, tok, pairs = load(args)
    if args.mem_only:
        base = _vm("VmRSS")
        score(model, tok, pairs, args.mem_only, args.batch)
        print(json.dumps({"peak_mib": (_vm("VmHWM") - base) / 2**20}))
        return
    ref = {p: score(model, tok, pairs, p, args.batch) for p in PATHS}  # warm-up, and the outputs compared
    times = {p: [] for p in PATHS}
    for _ in range(args.rounds):
        for p in random.sample(list(PATHS), len(PATHS)):
            w, c = time.perf_counter(), time.process_time()
            score(model, tok, pairs, p, args.batch)
            times[p].append((time.perf_counter() - w, time.process_time() - c))
    mem = {}
    for p in PATHS:
        cmd = [
            sys.executable,
            __file__,
            "--model",
            args.model,
            "--pairs",
            str(args.pairs),
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
            "--mem-only",
            p,
        ]
        mem[p] = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )
    model_name, flags = machine_cpu(("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    print(
        f"machine: {model_name}, {platform.machine()}, flags {' '.join(flags)}; torch {torch.__version__}, "
        f"{args.threads} thread(s); {args.pairs} pairs x 2 responses, batch {args.batch}, {args.rounds} rounds"
    )
    wall = {p: statistics.median(t[0] for t in times[p]) for p in PATHS}
    cpus = {p: statistics.median(t[1] for t in times[p]) for p in PATHS}
    diff = {p: max(abs(a - b) for x, y in zip(ref["full"], ref[p]) for a, b in zip(x, y)) for p in PATHS}
    same = {p: sum((x[0] > x[1]) == (y[0] > y[1]) for x, y in zip(ref["full"], ref[p])) for p in PATHS}
    print(
        "| path | wall (s) | CPU (s) | speed-up (CPU) | peak memory (+MiB) | max score diff vs full | same decision |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in PATHS:
        d, s = diff[p], same[p]
        print(
            f"| {PATHS[p]} | {wall[p]:.1f} | {cpus[p]:.1f} | {cpus['full'] / cpus[p]:.2f}x | "
            f"{mem[p]['peak_mib']:.0f} | {d:.2e} | {s}/{len(pairs)} |"
        )


if __name__ == "__main__":
    main()
