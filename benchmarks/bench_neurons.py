"""Neuron relevance throughput: yfpo AttnLRP vs integrated gradients, activation x gradient and lxt.

Every method runs in its own fresh process (so peak RSS is per method) on the SAME batch of GSM8K
train (question, solution) samples of the default model; the processes are interleaved over rounds
(the machine is shared). Peers:
- ``actgrad``: the same pass without LRP rules (activation x gradient);
- ``ig_joint``: 20-step integrated gradients on the neuron activations, all layers scaled together
  (baseline 0, midpoint rule): 20 forward+backward passes -- the cheapest IG;
- ``ig_layer``: 20-step IG per layer (scale one layer's neurons at a time, as knowledge-neuron IG does);
  measured on `--ig-layers` layers and extrapolated linearly to all layers;
- ``lxt``: lxt 2.1 efficient mode in .venv-lxt (transformers 4.57.6), when that environment exists;
  its relevances are also compared with ours on this real model.

    .venv/bin/python benchmarks/bench_neurons.py [--n 4] [--max-length 160] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LXT_PY = ROOT / ".venv-lxt" / "bin" / "python"
STEPS = 20


def _ig(model, batch, layers):
    """20-step IG attributions (L, W summed over batch) for `layers` (None = all layers jointly)."""
    from yfpo.models import arch
    from yfpo.neurons.relevance import gold_logit_target, no_param_grads

    L, W = arch.neuron_shape(model)
    attr = torch.zeros(batch["input_ids"].shape[0], L, W)
    groups = [None] if layers is None else [[l] for l in layers]
    emb_fn = arch.embed_tokens(model)
    for group in groups:
        scaled = list(range(L)) if group is None else group
        for s in range(STEPS):
            alpha = (s + 0.5) / STEPS
            store = {}

            def pre(l):
                def f(m, a):
                    u = a[0]
                    x = (u.detach() * alpha).requires_grad_(True)
                    store[l] = (u.detach(), x)
                    return (x,)

                return f

            hs = [arch.down_proj(model, l).register_forward_pre_hook(pre(l)) for l in scaled]
            with no_param_grads(model), torch.enable_grad():
                emb = emb_fn(batch["input_ids"]).detach()
                t = gold_logit_target(
                    model, None, batch["attention_mask"], batch["target_mask"], batch["gold"], inputs_embeds=emb
                )
                xs = [store[l][1] for l in scaled]
                grads = torch.autograd.grad(t.sum(), xs)
            for h in hs:
                h.remove()
            m = batch["target_mask"].unsqueeze(-1).float()
            for l, g in zip(scaled, grads):
                attr[:, l] += (store[l][0] * g * m).sum(1) / STEPS
    return attr


def worker(method: str, batch_path: str, out_path: str, ig_layers: int) -> None:
    from yfpo.models.loading import load_model
    from yfpo.neurons.relevance import batch_relevance

    model, _ = load_model("default")
    b = torch.load(batch_path)
    warm = {k: v[:1, :16] for k, v in b.items()}
    L = model.config.num_hidden_layers
    if method in ("attnlrp", "actgrad"):
        batch_relevance(model, warm, method)
        t0 = time.perf_counter()
        rec, _ = batch_relevance(model, b, method)
        dt, rel, scale = time.perf_counter() - t0, rec.relevance, 1.0
    elif method == "ig_joint":
        _ig(model, warm, None)
        t0 = time.perf_counter()
        rel = _ig(model, b, None)
        dt, scale = time.perf_counter() - t0, 1.0
    elif method == "ig_layer":
        layers = [round(i * (L - 1) / max(ig_layers - 1, 1)) for i in range(ig_layers)]
        _ig(model, warm, layers[:1])
        t0 = time.perf_counter()
        rel = _ig(model, b, layers)
        dt = time.perf_counter() - t0
        scale = L / len(layers)
    else:
        raise SystemExit(f"unknown method {method}")
    torch.save(
        {
            "relevance": rel,
            "time_s": dt * scale,
            "measured_s": dt,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        },
        out_path,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ig-layers", type=int, default=2)
    ap.add_argument("--ig-rounds", type=int, default=None, help="run the (slow) IG peers in the first N rounds only")
    ap.add_argument("--resume", help="folder of an earlier run: reuse its batch and finished measurements")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.batch, args.out, args.ig_layers)
        return

    from yfpo.data.corpora import math_corpus
    from yfpo.models.loading import embedded_dir, load_model
    from yfpo.neurons.relevance import collate, encode_record

    _, tok = load_model("default")
    recs = math_corpus(args.n, seed=123)
    batch = collate([encode_record(tok, r.prompt, r.response, args.max_length, r.id) for r in recs], tok.pad_token_id)
    tmp = Path(args.resume) if args.resume else Path(tempfile.mkdtemp(prefix="bench_neurons_"))
    bp = tmp / "batch.pt"
    if args.resume and bp.exists():
        batch = torch.load(bp)
    else:
        torch.save(batch, bp)
    print(f"work folder: {tmp}", file=sys.stderr)
    methods = ["attnlrp", "actgrad", "ig_joint", "ig_layer"] + (["lxt"] if LXT_PY.exists() else [])
    res: dict[str, list[dict]] = {m: [] for m in methods}
    env = dict(os.environ, YFPO_NO_PROGRESS="1", PYTHONWARNINGS="ignore")
    for r in range(args.rounds):
        for m in methods:  # interleaved
            out = tmp / f"{m}-{r}.pt"
            if m.startswith("ig_") and args.ig_rounds is not None and r >= args.ig_rounds:
                continue
            if out.exists():
                res[m].append(torch.load(out))
                continue
            if m == "lxt":
                cmd = [
                    str(LXT_PY),
                    str(ROOT / "scripts" / "lxt_reference" / "bench_lxt.py"),
                    str(embedded_dir("smollm2-135m-instruct")),
                    str(bp),
                    str(out),
                    str(torch.get_num_threads()),
                ]
            else:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    m,
                    "--batch",
                    str(bp),
                    "--out",
                    str(out),
                    "--ig-layers",
                    str(args.ig_layers),
                ]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            res[m].append(torch.load(out))
            print(f"round {r} {m}: {res[m][-1]['time_s']:.2f} s", file=sys.stderr)
    n = batch["input_ids"].shape[0]
    ours = statistics.median(x["time_s"] for x in res["attnlrp"])
    tokens = int(batch["target_mask"].sum())
    print(
        f"\nbatch: {n} GSM8K train samples, padded length {batch['input_ids'].shape[1]}, {tokens} target tokens; "
        f"{args.rounds} interleaved rounds (IG: {args.ig_rounds or args.rounds}), median time; "
        f"threads {torch.get_num_threads()}"
    )
    print(f"{'method':<38} {'time (s)':>9} {'samples/s':>10} {'x slower than ours':>19} {'peak RSS (GB)':>14} runs")
    label = {
        "attnlrp": "yfpo AttnLRP (1 fwd+bwd)",
        "actgrad": "activation x gradient (no rules)",
        "ig_joint": f"IG {STEPS} steps, all layers jointly",
        "ig_layer": f"IG {STEPS} steps per layer (extrap.)",
        "lxt": "lxt 2.1 efficient (transformers 4.57)",
    }
    for m in methods:
        t = statistics.median(x["time_s"] for x in res[m])
        rss = max(x["peak_rss_gb"] for x in res[m])
        each = "/".join(f"{x['time_s']:.1f}" for x in res[m])
        print(f"{label[m]:<38} {t:>9.2f} {n / t:>10.3f} {t / ours:>19.2f} {rss:>14.2f} {each}")
    ref = res["attnlrp"][0]["relevance"]
    if "lxt" in res:
        lx = res["lxt"][0]["relevance"]
        d = (ref - lx).abs().max() / lx.abs().max()
        print(f"\nyfpo vs lxt relevance on the default model: max |diff| / max |lxt| = {d:.2e}")
    ig = res["ig_joint"][0]["relevance"]
    c = torch.corrcoef(torch.stack([ref.flatten(), ig.flatten()]))[0, 1]
    print(f"correlation of per-neuron relevance, AttnLRP vs joint IG: {c:.3f}")


if __name__ == "__main__":
    main()
