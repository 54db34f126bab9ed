#!/usr/bin/env python
"""Evaluation speed: `yfpo eval`'s batched greedy generation vs a naive per-example `model.generate` loop.

Both sides get the same GSM8K test problems and the same chat prompts (yfpo.engine.prompts.build_prompt), greedy
decoding, the same end-of-turn tokens and max_new_tokens, and both grade their outputs with every extractor.
  batched  yfpo.eval.bench.run_eval (sort by length, left-padded batches, KV cache, per-item JSONL), run three
           times, interleaved with the two halves of the naive loop (the machine is shared; the median is reported)
  naive    for each problem: tokenizer -> model.generate(one prompt) -> decode -> grade
  prefill  both sides with max_new_tokens=1: the prompt-processing work that batching cannot shrink
It prints whether the greedy outputs are identical (count; for the ones that differ, where they diverge --
batched float32 with padding can flip a near-tie between two tokens) and problems/s with the speed-up, by wall
time and by this process's CPU time (the CPU time is much less sensitive to other jobs on a shared machine; with
--threads 1 it is the compute each side needed).

    .venv/bin/python benchmarks/bench_eval.py [--n 16 --max-new-tokens 128 --batch-size 16]

Backend comparison (--backends): the same prompts through yfpo.engine.generate with each backend named (the first is
the reference, normally hf = today's path), greedy, at each --max-new-tokens given; rounds interleave the backends
(order reversed every other round) and the median is reported. Per backend: tokens/s, speed-up over the first,
share of greedy outputs identical to it, peak resident memory above the process's level before the run (sampled
every 20 ms), and the one-off setup time (conversion, first load) of its first call.

    .venv/bin/python benchmarks/bench_eval.py --backends hf,fast,ct2 --n 64 --max-new-tokens 128,256 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from _machine import cpu as machine_cpu


def _load_avg() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def run_batched(model, tok, probs, args) -> tuple[Clock, list[dict]]:
    from yfpo.eval.bench import load_items, run_eval

    with tempfile.TemporaryDirectory() as d:
        with Clock() as c:
            run_eval(
                model,
                "gsm8k",
                tokenizer=tok,
                problems=probs,
                out_dir=d,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                backend="hf",
                progress=False,
            )
        return c, load_items(d)


def run_naive(model, tok, probs, prompts, args) -> tuple[Clock, list[dict]]:
    import torch

    from yfpo.engine.common import eos_ids
    from yfpo.grading import grade

    eos = eos_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    with Clock() as c, torch.no_grad():
        for p, prompt in zip(probs, prompts):
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            out = model.generate(
                **enc,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            new = out[0, enc.input_ids.shape[1] :].tolist()
            n_tok = len(new)
            if new and new[-1] in eos:
                new = new[:-1]
            text = tok.decode(new, skip_special_tokens=True)
            rows.append({"id": p.id, "output": text, "n_tokens": n_tok, "correct": grade(text, p.answer)["correct"]})
    return c, rows


def run_prefill(model, tok, prompts, args, batched: bool) -> Clock:
    """Prompt processing alone (max_new_tokens=1): batched (padded batches), or one prompt at a time."""
    from yfpo.engine.generate import generate

    with Clock() as c:
        if batched:
            generate(model, tok, prompts, max_new_tokens=1, batch_size=args.batch_size, backend="hf", progress=False)
        else:
            for p in prompts:
                generate(model, tok, [p], max_new_tokens=1, batch_size=1, backend="hf", progress=False)
    return c


class PeakRSS:
    """Peak resident memory (MiB) of this process during a block, above its level at the start (sampled)."""

    def __enter__(self):
        import threading

        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.extra = self.peak - self.base


def compare_backends(model, tok, prompts, args) -> dict:
    from yfpo.engine.generate import generate

    names = args.backends.split(",")
    results: dict = {}
    for mnt in [int(x) for x in str(args.max_new_tokens).split(",")]:
        setup = {}
        for b in names:  # first call of each backend: conversion / engine start, timed apart, then not counted
            with Clock() as c:
                generate(
                    model, tok, prompts[:1], max_new_tokens=4, backend=b, batch_size=args.batch_size, progress=False
                )
            setup[b] = c.wall
        runs: dict = {b: [] for b in names}
        outs: dict = {}
        for r in range(args.rounds):
            for b in names if r % 2 == 0 else names[::-1]:
                with PeakRSS() as mem, Clock() as c:
                    g = generate(
                        model, tok, prompts, max_new_tokens=mnt, backend=b, batch_size=args.batch_size, progress=False
                    )
                runs[b].append({"wall": c.wall, "cpu": c.cpu, "mem_mib": mem.extra, "load": _load_avg()})
                outs.setdefault(b, g)
                print(
                    f"  {mnt} new tokens, round {r + 1}, {b}: {c.wall:.1f} s wall, {c.cpu:.1f} s CPU, "
                    f"+{mem.extra:.0f} MiB (load {_load_avg()})",
                    flush=True,
                )
        ref = outs[names[0]]
        base_wall = statistics.median(x["wall"] for x in runs[names[0]])
        base_cpu = statistics.median(x["cpu"] for x in runs[names[0]])
        print(f"\n{len(prompts)} prompts, greedy, max_new_tokens {mnt}, {args.rounds} round(s), reference {names[0]}")
        print(
            "| backend | new tokens | wall (s, median) | tokens/s | speed-up (wall) | CPU (s) | speed-up (CPU) | "
            "identical to " + names[0] + " | peak memory (+MiB) | setup (s) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = {}
        for b in names:
            wall = statistics.median(x["wall"] for x in runs[b])
            cpu = statistics.median(x["cpu"] for x in runs[b])
            ntok = sum(x.n_tokens for x in outs[b])
            same = sum(x.text == y.text and x.n_tokens == y.n_tokens for x, y in zip(outs[b], ref))
            mem = max(x["mem_mib"] for x in runs[b])
            rows[b] = {
                "tokens": ntok,
                "wall": wall,
                "cpu": cpu,
                "tok_s": ntok / wall,
                "speedup_wall": base_wall / wall,
                "speedup_cpu": base_cpu / cpu,
                "identical": same,
                "n": len(ref),
                "mem_mib": mem,
                "setup_s": setup[b],
                "runs": runs[b],
            }
            print(
                f"| {b} | {ntok} | {wall:.1f} | {ntok / wall:.1f} | {base_wall / wall:.2f}x | {cpu:.1f} | "
                f"{base_cpu / cpu:.2f}x | {same}/{len(ref)} | {mem:.0f} | {setup[b]:.1f} |",
                flush=True,
            )
            for i, (x, y) in enumerate(zip(outs[b], ref)):
                if x.text != y.text:
                    print(f"    prompt {i} differs at {_divergence(tok, x.text, y.text)}")
        results[mnt] = rows
    return results


def _divergence(tok, a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    ta = tok(a[:i], add_special_tokens=False).input_ids
    return f"char {i} (~token {len(ta)}): batched {a[i : i + 25]!r} vs naive {b[i : i + 25]!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="GSM8K test problems (the first N)")
    ap.add_argument("--max-new-tokens", default="128", help="an int; with --backends a comma list (128,256)")
    ap.add_argument(
        "--backends",
        default=None,
        help="comma list of engine backends to compare, reference first "
        "(e.g. hf,fast,ct2); replaces the naive-loop comparison",
    )
    ap.add_argument("--rounds", type=int, default=2, help="with --backends: interleaved rounds per setting")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="default")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default). On a shared machine use 1: with 2 threads and other jobs "
        "running, OpenMP waits make every pass several times slower",
    )
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if not args.backends:
        args.max_new_tokens = int(args.max_new_tokens)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    from yfpo.data.problems import load_benchmark
    from yfpo.engine.generate import generate
    from yfpo.engine.prompts import build_prompt
    from yfpo.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    probs = load_benchmark("gsm8k", limit=args.n)
    prompts = [build_prompt(tok, p.question) for p in probs]
    plen = [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]
    n = len(probs)
    print(
        f"model {model.config.name_or_path} | {n} GSM8K test problems, prompt tokens {min(plen)}-{max(plen)} "
        f"(mean {statistics.mean(plen):.0f}) | max_new_tokens {args.max_new_tokens} | batch {args.batch_size}"
    )
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load avg at start {_load_avg()}",
        flush=True,
    )

    generate(model, tok, prompts[:1], max_new_tokens=4, backend="hf", progress=False)  # warm-up, not timed
    if args.backends:
        import subprocess

        model_name, flags = machine_cpu(("avx2", "avx512f", "avx512_bf16", "avx512_vnni"))
        print(
            f"CPU {model_name}, flags {' '.join(flags)}; uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
        )
        res = compare_backends(model, tok, prompts, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "n": n,
                        "cpu": model_name,
                        "flags": flags,
                        "threads": torch.get_num_threads(),
                        "torch": torch.__version__,
                        "results": res,
                    },
                    f,
                    indent=2,
                )
        return 0

    # interleaved: B, naive first half, B, naive second half, B (the machine is shared; load drifts)
    half = (n + 1) // 2
    b_clocks, b_rows = [], []
    n_wall = n_cpu = 0.0
    rows_n: list[dict] = []
    for part in (slice(0, half), slice(half, None), None):
        c, rows = run_batched(model, tok, probs, args)
        b_clocks.append(c)
        b_rows.append(rows)
        print(f"batched #{len(b_clocks)}: {c.wall:.1f} s wall, {c.cpu:.1f} s CPU (load {_load_avg()})", flush=True)
        if part is not None:
            c, rows = run_naive(model, tok, probs[part], prompts[part], args)
            n_wall, n_cpu = n_wall + c.wall, n_cpu + c.cpu
            rows_n += rows
            print(
                f"naive, problems {part.start}-{(part.stop or n) - 1}: {c.wall:.1f} s wall, {c.cpu:.1f} s CPU "
                f"(load {_load_avg()})",
                flush=True,
            )
    pre_b = run_prefill(model, tok, prompts, args, batched=True)
    pre_1 = run_prefill(model, tok, prompts, args, batched=False)
    print(
        f"prefill only (max_new_tokens=1): batched {pre_b.wall:.1f} s wall / {pre_b.cpu:.1f} s CPU, "
        f"one prompt at a time {pre_1.wall:.1f} s / {pre_1.cpu:.1f} s",
        flush=True,
    )

    rows_b = b_rows[0]
    assert [r["prompt"] for r in rows_b] == prompts, "run_eval built different prompts"
    assert all([r["output"] for r in rows_b] == [r["output"] for r in x] for x in b_rows), (
        "batched greedy is not deterministic"
    )
    same = [a["output"] == b["output"] for a, b in zip(rows_b, rows_n)]
    b_wall = statistics.median(c.wall for c in b_clocks)
    b_cpu = statistics.median(c.cpu for c in b_clocks)
    tok_b = sum(r["n_tokens"] for r in rows_b)
    tok_n = sum(r["n_tokens"] for r in rows_n)
    acc_b = sum(r["correct"]["flexible"] for r in rows_b)
    acc_n = sum(r["correct"]["flexible"] for r in rows_n)
    ratio, ratio_cpu = n_wall / b_wall, n_cpu / b_cpu
    dec = (n_wall - pre_1.wall) / max(b_wall - pre_b.wall, 1e-9)
    dec_cpu = (n_cpu - pre_1.cpu) / max(b_cpu - pre_b.cpu, 1e-9)

    runs = " / ".join(f"{c.wall:.1f}" for c in b_clocks)
    print()
    print(
        "| method | wall (s) | problems/s | new tokens | tokens/s | speed-up (wall) | CPU (s) | speed-up (CPU) | GSM8K correct (flexible) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| naive per-example `model.generate` loop | {n_wall:.1f} | {n / n_wall:.3f} | {tok_n} | {tok_n / n_wall:.1f} | 1.00 "
        f"| {n_cpu:.1f} | 1.00 | {acc_n}/{n} |"
    )
    print(
        f"| `yfpo eval` batched (run_eval, batch {args.batch_size}), median of {len(b_clocks)} ({runs}) | {b_wall:.1f} | "
        f"{n / b_wall:.3f} | {tok_b} | {tok_b / b_wall:.1f} | **{ratio:.2f}x** | {b_cpu:.1f} | **{ratio_cpu:.2f}x** | {acc_b}/{n} |"
    )
    print()
    print(f"identical greedy outputs: {sum(same)}/{n}")
    for a, b, ok in zip(rows_b, rows_n, same):
        if not ok:
            print(f"  {a['id']} differs at {_divergence(tok, a['output'], b['output'])}")
    print(
        f"prompt processing (prefill, the same work on both sides) alone: batched {pre_b.wall:.1f} s = "
        f"{100 * pre_b.wall / b_wall:.0f}% of the batched wall time, one prompt at a time {pre_1.wall:.1f} s; "
        f"decode-only speed-up {dec:.2f}x wall, {dec_cpu:.2f}x CPU. "
        f"Rows that hit max_new_tokens: {sum(r['truncated'] for r in rows_b)}/{n}"
    )
    print(f"target >= 5x (wall): {'met' if ratio >= 5 else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "n": n,
                    "max_new_tokens": args.max_new_tokens,
                    "batch_size": args.batch_size,
                    "naive": {"wall": n_wall, "cpu": n_cpu},
                    "batched": [{"wall": c.wall, "cpu": c.cpu} for c in b_clocks],
                    "prefill_batched": {"wall": pre_b.wall, "cpu": pre_b.cpu},
                    "prefill_single": {"wall": pre_1.wall, "cpu": pre_1.cpu},
                    "speedup_wall": ratio,
                    "speedup_cpu": ratio_cpu,
                    "decode_speedup_wall": dec,
                    "decode_speedup_cpu": dec_cpu,
                    "identical": sum(same),
                    "tokens_batched": tok_b,
                    "tokens_naive": tok_n,
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
