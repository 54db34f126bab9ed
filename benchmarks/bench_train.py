"""Training-step cost of the yfpo losses against TRL's plain DPOTrainer (the peer).

Methods, all on the SAME collated batch of GSM8K-train pairs, built by the same `make_trainer` (same model,
DPOConfig, data and LoRA config); a step is `compute_loss` + backward + AdamW step:
  trl       trl.DPOTrainer, unmodified (the peer)
  dpo_2row  YFPOTrainer, gamma = 0, share_prompt off (TRL's two rows per pair: the earlier path)
  dpo       YFPOTrainer, gamma = 0               (yfpo's own loss path; each pair's prompt runs once)
  yfpo_2row YFPOTrainer, gamma = 1, NeuronSet, share_prompt off
  yfpo      YFPOTrainer, gamma = 1, NeuronSet    (neuron hooks + margin)
  dpo_fdt   YFPOTrainer, gamma = 0, FDT head
  yfpo_fdt  YFPOTrainer, gamma = 1, FDT head
Step time: all trainers live in one process and their steps are interleaved (a fresh random order every round);
median over `--steps` rounds after one warm-up round. Peak memory: each method runs alone in a fresh
subprocess (load, build, one step: the first step allocates activations, gradients and AdamW state) and reports
its peak RSS (VmHWM, model included), with MALLOC_MMAP_THRESHOLD_=131072 so that glibc returns freed blocks and
the peak reflects live memory (with glibc's default dynamic threshold the same method's peak varies run to run
by ~0.5 GB; --default-malloc measures that way).
Both wall time and process CPU time are recorded (on a shared machine CPU time is the steadier of the two).
Throughput: model FLOPs per step = 8 N x tokens for full fine-tuning (policy forward 2N + backward 4N + reference
forward 2N) and 6 N x tokens with LoRA (the frozen weights get no weight-gradient GEMMs); N = all parameters
(a tied matrix once), tokens = real (unpadded) tokens of the batch in TRL's two-rows-per-pair layout (for the
packed methods too: the share then says how far they get beyond that layout's cost). Reported per CPU-second, as a share of this
machine's fp32 matmul peak per CPU-second measured in the same run (best of several 2048^3 products).

    .venv/bin/python benchmarks/bench_train.py [--steps 3 --batch 2 --max-length 256] [--full] [--neurons N.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = ["trl", "dpo_2row", "dpo", "yfpo_2row", "yfpo", "dpo_fdt", "yfpo_fdt"]
SETTINGS = {
    "trl": dict(gamma=0.0, fdt=False),
    "dpo_2row": dict(gamma=0.0, fdt=False, share_prompt=False),
    "dpo": dict(gamma=0.0, fdt=False),
    "yfpo_2row": dict(gamma=1.0, fdt=False, share_prompt=False),
    "yfpo": dict(gamma=1.0, fdt=False),
    "dpo_fdt": dict(gamma=0.0, fdt=True),
    "yfpo_fdt": dict(gamma=1.0, fdt=True),
}
LABELS = {
    "trl": "TRL DPOTrainer (peer)",
    "dpo_2row": "yfpo DPO (gamma 0), two rows per pair",
    "dpo": "yfpo DPO (gamma 0)",
    "yfpo_2row": "YFPO (gamma 1, neurons), two rows per pair",
    "yfpo": "YFPO (gamma 1, neurons)",
    "dpo_fdt": "DPO + FDT",
    "yfpo_fdt": "YFPO + FDT",
}


def write_pairs(path: Path, n: int) -> Path:
    """GSM8K train: chosen = gold solution, rejected = the next problem's solution (a wrong, fluent answer)."""
    from yfpo.data.problems import load_benchmark

    probs = load_benchmark("gsm8k_train", limit=n + 1)
    with open(path, "w") as f:
        for i in range(n):
            p, q = probs[i], probs[i + 1]
            f.write(
                json.dumps(
                    {
                        "prompt": p.question,
                        "chosen": f"{p.solution}\nThe answer is {p.answer}.",
                        "rejected": f"{q.solution}\nThe answer is {q.answer}.",
                    }
                )
                + "\n"
            )
    return path


def write_random_neurons(path: Path, model, frac: float, seed: int = 0) -> Path:
    from yfpo.models import arch
    from yfpo.neurons.neuronset import NeuronSet

    L, W = arch.neuron_shape(model)
    g = torch.Generator().manual_seed(seed)
    k = max(1, round(frac * L * W))
    flat = torch.randperm(L * W, generator=g)[:k]
    ns = NeuronSet(
        flat // W,
        flat % W,
        torch.randn(k, generator=g),
        torch.zeros(k),
        torch.ones(k),
        {
            "num_layers": L,
            "intermediate_size": W,
            "family": arch.get_arch(arch.unwrap(model)).family,
            "model": "default",
            "method": f"random {frac:.1%} (benchmark)",
        },
    )
    ns.save(path)
    return path


def build(method: str, a, pairs: Path, neurons: Path, model, tok):
    """A trainer for `method` on `model` (consumed); the peer goes through the same make_trainer with TRL's class."""
    from trl import DPOTrainer

    import yfpo.train.trainer as T
    from yfpo.train.config import TrainConfig

    s = SETTINGS[method]
    cfg = TrainConfig(
        model=a.model,
        pairs=str(pairs),
        neurons=str(neurons) if s["gamma"] else None,
        output_dir=str(Path(a.tmp) / method),
        lora=not a.full,
        batch_size=a.batch,
        max_length=a.max_length,
        max_steps=1,
        device="cpu",
        gamma=s["gamma"],
        fdt=s["fdt"],
        share_prompt=s.get("share_prompt", True),
        lr=1e-6,
        warmup_ratio=0.0,
    )
    if method == "trl":
        real = T.YFPOTrainer

        def peer(*x, yfpo=None, neuron_set=None, step_dpo=False, run_dir=None, ref_identity=None, **kw):
            return DPOTrainer(*x, **kw)  # the yfpo-only arguments of make_trainer dropped

        T.YFPOTrainer = peer
        try:
            tr, _ = T.make_trainer(cfg, model=model, tokenizer=tok)
        finally:
            T.YFPOTrainer = real
        assert type(tr) is DPOTrainer
    else:
        tr, _ = T.make_trainer(cfg, model=model, tokenizer=tok)
    params = [p for p in tr.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    return tr, opt


def one_step(tr, opt, batch) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one training step."""
    t, c = time.perf_counter(), time.process_time()
    tr.model.train()
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t, time.process_time() - c


def load(a):
    from yfpo.models import load_model

    torch.manual_seed(0)
    return load_model(a.model, dtype="float32", device="cpu")


def fixed_batch(tr) -> dict:
    return next(iter(tr.get_train_dataloader()))


def matmul_peak(n: int = 2048, reps: int = 8) -> tuple[float, float]:
    """fp32 matmul FLOP/s, best of `reps` 2048^3 products: (per wall second, per process-CPU second / thread)."""
    x, y = torch.randn(n, n), torch.randn(n, n)
    x @ y
    best_w = best_c = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        x @ y
        best_w = min(best_w, time.perf_counter() - t)
        best_c = min(best_c, time.process_time() - c)
    return 2 * n**3 / best_w, 2 * n**3 / best_c


def child(a) -> None:
    """One method alone: build, one step; print peak RSS."""
    model, tok = load(a)
    tr, opt = build(a.child, a, Path(a.pairs), Path(a.neurons), model, tok)
    batch = fixed_batch(tr)
    before = _proc_status("VmRSS")
    t = one_step(tr, opt, batch)  # the first step allocates everything (activations, grads, AdamW state)
    # VmHWM, not getrusage: ru_maxrss survives fork+exec on Linux, so a child would report its parent's peak
    print(
        json.dumps({"method": a.child, "peak_rss_gb": _proc_status("VmHWM"), "rss_before_step_gb": before, "step_s": t})
    )


def _proc_status(key: str) -> float:
    """VmRSS / VmHWM of this process from /proc/self/status, in GB."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024**2
    raise KeyError(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=3, help="measured rounds (after one warm-up round)")
    ap.add_argument("--batch", type=int, default=2, help="pairs per step")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--full", action="store_true", help="full fine-tuning (reference copy) instead of LoRA")
    ap.add_argument("--neurons", default=None, help="NeuronSet file (default: random 1%% of the neurons)")
    ap.add_argument("--frac", type=float, default=0.01)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core VM two threads made steps 4-15x slower and far "
        "noisier than one; 0 = torch's default)",
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method fresh-process peak-RSS runs")
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="memory runs with glibc's default (dynamic) mmap threshold instead of MALLOC_MMAP_THRESHOLD_=131072",
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("YFPO_NO_PROGRESS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        return child(a)

    methods = [m for m in a.methods.split(",") if m]
    assert methods[0] == "trl", "the peer (trl) must be measured"
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    a.tmp = str(tmp)
    pairs = write_pairs(tmp / "pairs.jsonl", max(a.batch, 2))
    model, tok = load(a)
    n_params = sum(p.numel() for p in model.parameters())
    neurons = Path(a.neurons) if a.neurons else write_random_neurons(tmp / "neurons.json", model, a.frac)
    from yfpo.neurons.neuronset import NeuronSet

    n_neurons = len(NeuronSet.load(neurons, model))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {a.model} ({n_params / 1e6:.1f} M params), "
        f"{'full fine-tuning' if a.full else 'LoRA'}, {n_neurons} neurons",
        flush=True,
    )

    # ---- step time: every trainer in this process, steps interleaved
    trainers = {}
    for i, m in enumerate(methods):
        mdl = model if i == 0 else load(a)[0]
        trainers[m] = build(m, a, pairs, neurons, mdl, tok)
    batch = fixed_batch(trainers["trl"][0])
    tokens = int(batch["attention_mask"].sum())
    resp_tokens = int(batch["completion_mask"].sum())
    print(
        f"batch: {batch['input_ids'].shape[0]} sequences x {batch['input_ids'].shape[1]} positions, {tokens} real tokens, "
        f"{resp_tokens} response tokens",
        flush=True,
    )
    rng = random.Random(0)
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(1 + a.steps):
        order = methods[:]
        rng.shuffle(order)  # a fresh order every round: no method always follows the same one
        got = {}
        for m in order:
            got[m] = one_step(*trainers[m], batch)
            if r > 0:
                times[m].append(got[m][0])
                cpu[m].append(got[m][1])
        print(
            f"round {r}{' (warm-up)' if r == 0 else ''}: "
            + ", ".join(f"{m} {got[m][0]:.2f}s (cpu {got[m][1]:.2f}s)" for m in methods),
            flush=True,
        )
    del trainers
    peak_w, peak_c = matmul_peak()

    # ---- peak memory: each method alone in a fresh process
    mem: dict[str, float] = {}
    if not a.no_memory:
        for m in methods:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                m,
                "--model",
                a.model,
                "--batch",
                str(a.batch),
                "--max-length",
                str(a.max_length),
                "--pairs",
                str(pairs),
                "--neurons",
                str(neurons),
                "--tmp",
                str(tmp),
            ]
            cmd += ["--full"] if a.full else []
            cmd += ["--threads", str(a.threads)] if a.threads else []
            env = dict(os.environ)
            if not a.default_malloc:
                # glibc's dynamic mmap threshold makes the same step's peak RSS bimodal (1.7 vs 2.3 GB at the end of
                # the forward, same method, run to run); a fixed threshold returns freed blocks to the OS, so the
                # peak reflects live memory
                env["MALLOC_MMAP_THRESHOLD_"] = "131072"
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"memory run of {m} failed")
            mem[m] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_gb"]
            print(f"peak RSS {m}: {mem[m]:.2f} GB", flush=True)

    # ---- table
    # model FLOPs per token: policy forward 2N + backward (input grads 2N, weight grads 2N; with LoRA the frozen
    # weights get no weight-gradient GEMMs, so ~0) + reference forward 2N
    per_tok = 6 if not a.full else 8
    flops = per_tok * n_params * tokens
    med = {m: statistics.median(times[m]) for m in methods}
    cmed = {m: statistics.median(cpu[m]) for m in methods}
    rows = []
    print()
    print(
        f"fp32 matmul peak measured: {peak_w / 1e9:.1f} GFLOP/s per wall second, {peak_c / 1e9:.1f} per CPU second "
        f"({torch.get_num_threads()} thread(s)); model FLOPs per step {per_tok}N x tokens = {flops / 1e9:.1f} GFLOP "
        f"({'2N fwd + 2N bwd (input grads; LoRA: no frozen-weight grads) + 2N ref fwd' if not a.full else '2N fwd + 4N bwd + 2N ref fwd'})"
    )
    print(
        "| method | step wall (s), median | x TRL | step CPU (s), median | x TRL | wall runs (s) | peak RSS (GB) | x TRL "
        "| GFLOP/s (per CPU s) | share of matmul peak |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for m in methods:
        r_t, r_c = med[m] / med["trl"], cmed[m] / cmed["trl"]
        mem_s = f"{mem[m]:.2f}" if m in mem else "-"
        r_m = f"{mem[m] / mem['trl']:.3f}" if m in mem else "-"
        gfs = flops / cmed[m]
        print(
            f"| {LABELS[m]} | {med[m]:.2f} | {r_t:.3f} | {cmed[m]:.2f} | {r_c:.3f} | {' / '.join(f'{t:.2f}' for t in times[m])} "
            f"| {mem_s} | {r_m} | {gfs / 1e9:.1f} | {gfs / peak_c:.0%} |"
        )
        rows.append(
            {
                "method": m,
                "median_s": med[m],
                "ratio_time": r_t,
                "median_cpu_s": cmed[m],
                "ratio_cpu": r_c,
                "runs_s": times[m],
                "cpu_s": cpu[m],
                "peak_rss_gb": mem.get(m),
                "ratio_mem": (mem[m] / mem["trl"]) if m in mem else None,
                "gflops_per_cpu_s": gfs / 1e9,
            }
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "args": vars(a),
                    "tokens": tokens,
                    "response_tokens": resp_tokens,
                    "n_params": n_params,
                    "n_neurons": n_neurons,
                    "matmul_peak_gflops_wall": peak_w / 1e9,
                    "matmul_peak_gflops_cpu": peak_c / 1e9,
                    "flops_per_step": flops,
                    "rows": rows,
                },
                indent=1,
            )
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
