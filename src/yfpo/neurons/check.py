"""`yfpo neurons check`: does ablating the selected neurons hurt math more than random neurons, and more
than general text?

Conditions: no ablation; the NeuronSet's neurons; `n_random` draws of random neurons with the same
per-layer counts (disjoint from the selected ones, seeds recorded). Ablation sets the neurons' down-projection
input to 0 (``zero``) or to their activation mean on the identification corpus (``mean``), through forward
pre-hooks on this model instance that are removed afterwards. Measured per condition:

- math NLL: mean per-token NLL of held-out GSM8K *test* gold solutions (teacher-forced, response tokens);
- contrast NLL: the same on contrast texts not used by `find`;
- math accuracy: greedy on `n_eval` problems of `eval_bench` (default GSM8K test) through yfpo.eval (generate + answers); skipped
  with a note when those modules are not available.

Writes check.json and check.png; the verdict is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from yfpo.neurons.config import CheckConfig


@contextlib.contextmanager
def ablate(
    model: nn.Module, layers: torch.Tensor, indices: torch.Tensor, values: torch.Tensor | None = None
) -> Iterator[nn.Module]:
    """Within the block, neuron (layers[i], indices[i]) of this model reads `values[i]` (default 0)."""
    from yfpo.models import arch

    layers = torch.as_tensor(layers, dtype=torch.long)
    indices = torch.as_tensor(indices, dtype=torch.long)
    vals = torch.zeros(len(layers)) if values is None else torch.as_tensor(values, dtype=torch.float32)
    handles = []
    for l in sorted(set(layers.tolist())):
        sel = layers == l
        idx, v = indices[sel], vals[sel]

        def hook(module, args, idx=idx, v=v):
            u = args[0].clone()
            u[..., idx.to(u.device)] = v.to(device=u.device, dtype=u.dtype)
            return (u,) + tuple(args[1:])

        handles.append(arch.down_proj(model, l).register_forward_pre_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


NLL_CHUNK = 512  # response positions whose full-vocabulary logits exist at once in response_nll
# config keys of models whose logits are not plain head(h): response_nll runs the model's own forward for them
_HEAD_SCALERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@torch.no_grad()
def response_nll(
    model: nn.Module,
    tokenizer,
    records: Sequence,
    *,
    batch_size: int = 8,
    max_length: int = 256,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "nll",
) -> list[float]:
    """Per-record mean NLL (nats/token) of the teacher-forced response under `model`."""
    from yfpo.neurons.relevance import _batches, collate, encode_record
    from yfpo.utils import progress as pbar

    enc = [encode_record(tokenizer, r.prompt, r.response, max_length, r.id) for r in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [0.0] * len(enc)
    head = model.get_output_embeddings()
    plain = head is not None and not any(getattr(model.config, k, None) for k in _HEAD_SCALERS)
    for bidx in pbar(_batches(enc, batch_size), desc=desc, unit="batch", disable=None if progress else True):
        b = collate([enc[i] for i in bidx], pad)
        ids, am = b["input_ids"].to(device), b["attention_mask"].to(device)
        gold, m = b["gold"].to(device), b["target_mask"].to(device)
        if (
            plain
        ):  # the LM head at the response positions only, NLL_CHUNK of them at a time (not batch x length x vocab)
            h = model.get_decoder()(input_ids=ids, attention_mask=am, use_cache=False).last_hidden_state
            rows, cols = m.bool().nonzero(as_tuple=True)
            nll = torch.zeros(m.shape, dtype=torch.float32, device=h.device)
            for s in range(0, len(rows), NLL_CHUNK):
                r, c = rows[s : s + NLL_CHUNK], cols[s : s + NLL_CHUNK]
                z = head(h[r, c]).float()
                nll[r, c] = torch.nn.functional.cross_entropy(z, gold[r, c], reduction="none")
        else:
            logits = model(input_ids=ids, attention_mask=am, use_cache=False).logits.float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), gold, reduction="none")
        per = (nll * m).sum(1) / m.sum(1)
        for j, i in enumerate(bidx):
            out[i] = float(per[j])
    return out


def _eval_tools() -> tuple[Any, Any, Any] | str:
    try:
        from yfpo.engine.generate import generate
        from yfpo.engine.prompts import build_prompt
        from yfpo.grading import is_correct
    except ImportError as e:
        return f"accuracy not measured: {e} (yfpo.eval generate/prompts/answers not available in this build)"
    return generate, build_prompt, is_correct


def _accuracy(model, tokenizer, problems, tools, cfg: CheckConfig) -> dict[str, Any]:
    generate, build_prompt, is_correct = tools
    prompts = [build_prompt(tokenizer, p.question) for p in problems]
    gens = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=16,
        do_sample=False,
        progress=cfg.progress,
    )
    correct = [bool(is_correct(g.text, p.answer)) for g, p in zip(gens, problems)]
    return {"acc": sum(correct) / len(correct), "n_correct": sum(correct), "n": len(correct), "correct": correct}


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _mean_ci(xs: Sequence[float]) -> tuple[float, float, float]:
    n = len(xs)
    m = _mean(xs)
    if n < 2:
        return m, m, m
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = 1.96 * sd / math.sqrt(n)
    return m, m - h, m + h


def causal_check(cfg: CheckConfig) -> dict:
    """Run the ablation check; returns the result dict (also written to <out_dir>/check.json).
    Long: one ablation experiment in order (load, corpora, conditions, NLL per condition, accuracy, verdict, record);
    the conditions share the model, hooks and corpora. Next to split (docs/ARCHITECTURE.md)."""
    from yfpo.config import to_dict
    from yfpo.data.corpora import contrast_corpus, math_corpus
    from yfpo.data.problems import load_benchmark
    from yfpo.models import arch
    from yfpo.models.loading import load_model
    from yfpo.neurons.find import work_dir_for
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.neurons.relevance import corpus_relevance
    from yfpo.neurons.select import select_random
    from yfpo.utils import atomic_write_json, now, versions

    if cfg.ablation not in ("zero", "mean"):
        raise ValueError(f"neurons check: ablation must be 'zero' or 'mean', got {cfg.ablation!r}")
    if cfg.n_random < 1:
        raise ValueError(f"neurons check: n_random must be >= 1, got {cfg.n_random}")
    t0 = time.time()
    ns = NeuronSet.load(cfg.neurons)
    prov = ns.provenance
    model_name = cfg.model or prov.get("model")
    if not model_name:
        raise ValueError(f"{cfg.neurons}: provenance has no 'model'; pass --model")
    model, tok = load_model(model_name, dtype=cfg.dtype, device=cfg.device)
    ns.check_model(model, where=str(cfg.neurons))
    model.eval()
    L, W = arch.neuron_shape(model)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.neurons).parent / "check"
    out_dir.mkdir(parents=True, exist_ok=True)

    # Held-out texts: GSM8K test solutions (find uses train); contrast records after find's first n.
    math_recs = math_corpus(cfg.n_math, cfg.seed, cfg.data_dir, split="test")
    find_c = (prov.get("corpora") or {}).get("contrast") or {}
    skip = int(find_c.get("n", 0)) if find_c else 0
    find_seed = int(find_c.get("seed", prov.get("seed", 0))) if find_c else cfg.seed
    con_recs = contrast_corpus(skip + cfg.n_contrast, find_seed, cfg.data_dir)[skip:]

    # Ablation values and random draws.
    counts = ns.per_layer_counts()
    draws = []
    for r in range(cfg.n_random):
        seed = cfg.seed * 1000 + r
        rl, ri = select_random(counts, W, seed, exclude=(ns.layers, ns.indices))
        draws.append({"name": f"random{r}", "seed": seed, "layers": rl, "indices": ri})
    mean_grid = None
    if cfg.ablation == "mean":
        grids_path = work_dir_for(cfg.neurons) / "grids.pt"
        if grids_path.exists():
            mean_grid = torch.load(grids_path)["act_mean_math"]
        else:  # recompute activation means on the identification corpus
            mc = (prov.get("corpora") or {}).get("math") or {}
            recs = math_corpus(int(mc.get("n", 128)), int(mc.get("seed", 0)), cfg.data_dir)
            mean_grid = corpus_relevance(
                model,
                tok,
                recs,
                method="forward",
                batch_size=cfg.batch_size,
                max_length=cfg.max_length,
                progress=cfg.progress,
            ).act_mean
    conditions: list[dict[str, Any]] = [
        {"name": "none", "layers": None, "indices": None, "values": None},
        {
            "name": "selected",
            "layers": ns.layers,
            "indices": ns.indices,
            "values": ns.mean if cfg.ablation == "mean" else None,
        },
    ]
    for d in draws:
        d["values"] = mean_grid[d["layers"], d["indices"]] if mean_grid is not None else None
        conditions.append(d)

    tools = _eval_tools() if cfg.n_eval > 0 else "accuracy not measured: n_eval = 0"
    problems = (
        load_benchmark(cfg.eval_bench, data_dir=cfg.data_dir, limit=cfg.n_eval) if not isinstance(tools, str) else []
    )

    results: dict[str, dict[str, Any]] = {}
    for c in conditions:
        ctx = (
            ablate(model, c["layers"], c["indices"], c["values"])
            if c["layers"] is not None
            else contextlib.nullcontext()
        )
        with ctx:
            kw = dict(batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device, progress=cfg.progress)
            r: dict[str, Any] = {
                "math_nll": response_nll(model, tok, math_recs, desc=f"{c['name']}: math NLL", **kw),
                "contrast_nll": response_nll(model, tok, con_recs, desc=f"{c['name']}: contrast NLL", **kw),
            }
            if not isinstance(tools, str):
                r["accuracy"] = _accuracy(model, tok, problems, tools, cfg)
        results[c["name"]] = r

    base = results["none"]
    summary: dict[str, Any] = {}
    for name, r in results.items():
        dm = [a - b for a, b in zip(r["math_nll"], base["math_nll"])]
        dc = [a - b for a, b in zip(r["contrast_nll"], base["contrast_nll"])]
        s = {
            "math_nll": _mean(r["math_nll"]),
            "contrast_nll": _mean(r["contrast_nll"]),
            "delta_math_nll": _mean_ci(dm),
            "delta_contrast_nll": _mean_ci(dc),
            "rel_delta_math_nll": _mean(dm) / _mean(base["math_nll"]),
            "rel_delta_contrast_nll": _mean(dc) / _mean(base["contrast_nll"]),
        }
        if "accuracy" in r:
            s["accuracy"] = r["accuracy"]["acc"]
            s["n_correct"] = r["accuracy"]["n_correct"]
        summary[name] = s
    sel = summary["selected"]
    rnd = [summary[d["name"]] for d in draws]
    rnd_dm = [x["delta_math_nll"][0] for x in rnd]
    sel_dm, sel_dc = sel["delta_math_nll"][0], sel["delta_contrast_nll"][0]
    # per-sample comparison: fraction of math texts hurt more by the selected ablation than by the mean random one
    per_sel = [a - b for a, b in zip(results["selected"]["math_nll"], base["math_nll"])]
    per_rnd = [
        _mean([results[d["name"]]["math_nll"][i] - base["math_nll"][i] for d in draws]) for i in range(len(per_sel))
    ]
    verdict = {
        "math_hurt_more_than_random": bool(sel_dm > max(rnd_dm)),
        "selected_delta_math_nll": sel_dm,
        "random_delta_math_nll": {"mean": _mean(rnd_dm), "max": max(rnd_dm), "each": rnd_dm},
        "ratio_selected_to_random_mean": sel_dm / _mean(rnd_dm) if _mean(rnd_dm) != 0 else None,
        "frac_math_texts_selected_worse_than_random": _mean([float(a > b) for a, b in zip(per_sel, per_rnd)]),
        "math_hurt_more_than_contrast": bool(sel_dm > sel_dc),
        "math_hurt_more_than_contrast_relative": bool(sel["rel_delta_math_nll"] > sel["rel_delta_contrast_nll"]),
        "selected_delta_contrast_nll": sel_dc,
        "specificity_vs_random": (sel_dm - sel_dc)
        - _mean([x["delta_math_nll"][0] - x["delta_contrast_nll"][0] for x in rnd]),
    }
    if "accuracy" in sel:
        verdict["accuracy"] = {
            "none": summary["none"]["accuracy"],
            "selected": sel["accuracy"],
            "random": [x["accuracy"] for x in rnd],
        }
    text = [
        f"Ablation check ({cfg.ablation}) of {len(ns)} neurons from {cfg.neurons} on {model_name}:",
        f"  {'condition':<10} {'math NLL':>9} {'dMath':>9} {'contrast NLL':>13} {'dContrast':>10}"
        + (f" {'acc':>6}" if "accuracy" in sel else ""),
    ]
    for name, s in summary.items():
        text.append(
            f"  {name:<10} {s['math_nll']:>9.4f} {s['delta_math_nll'][0]:>+9.4f} {s['contrast_nll']:>13.4f} "
            f"{s['delta_contrast_nll'][0]:>+10.4f}" + (f" {s['accuracy']:>6.3f}" if "accuracy" in s else "")
        )
    text.append(
        f"  math hurt more than by random neurons (all {cfg.n_random} draws): "
        f"{'YES' if verdict['math_hurt_more_than_random'] else 'NO'} "
        f"(dMath {sel_dm:+.4f} vs random mean {_mean(rnd_dm):+.4f}, max {max(rnd_dm):+.4f})"
    )
    text.append(
        f"  math hurt more than contrast: {'YES' if verdict['math_hurt_more_than_contrast'] else 'NO'} "
        f"(dMath {sel_dm:+.4f} vs dContrast {sel_dc:+.4f} nats/token)"
    )
    if isinstance(tools, str):
        text.append(f"  {tools}")
    verdict_text = "\n".join(text)

    res = {
        "neurons": str(cfg.neurons),
        "model": model_name,
        "n_neurons": len(ns),
        "per_layer_counts": counts,
        "ablation": cfg.ablation,
        "random_draws": [{"name": d["name"], "seed": d["seed"]} for d in draws],
        "corpora": {
            "math": {"name": "gsm8k_test solutions", "n": len(math_recs), "seed": cfg.seed},
            "contrast": {
                "name": "self_instruct+dolly (after find's records)",
                "n": len(con_recs),
                "offset": skip,
                "seed": find_seed,
            },
            "eval": {"name": cfg.eval_bench, "n": len(problems)} if problems else None,
        },
        "accuracy_note": tools if isinstance(tools, str) else None,
        "summary": summary,
        "verdict": verdict,
        "verdict_text": verdict_text,
        "per_item": {
            name: {
                "math_nll": r["math_nll"],
                "contrast_nll": r["contrast_nll"],
                **({"correct": r["accuracy"]["correct"]} if "accuracy" in r else {}),
            }
            for name, r in results.items()
        },
        "config": to_dict(cfg),
        "versions": versions(),
        "date": now(),
        "time_s": round(time.time() - t0, 1),
    }
    paths = {"json": str(out_dir / "check.json"), "png": str(out_dir / "check.png")}
    res["paths"] = paths
    atomic_write_json(paths["json"], res)
    _plot(
        summary,
        paths["png"],
        title=f"{cfg.ablation} ablation of {len(ns)} neurons ({prov.get('method')})",
        acc_label=f"{cfg.eval_bench} accuracy (n = {len(problems)})",
    )
    return res


def _plot(summary: dict[str, dict[str, Any]], png: str, title: str, acc_label: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in summary if n != "none"]
    x = range(len(names))
    fig, axes = plt.subplots(1, 2 if "accuracy" in summary["none"] else 1, figsize=(9, 3.5), squeeze=False)
    ax = axes[0][0]
    w = 0.38
    for off, key, lab in ((-w / 2, "delta_math_nll", "math"), (w / 2, "delta_contrast_nll", "contrast")):
        m = [summary[n][key][0] for n in names]
        err = [
            [summary[n][key][0] - summary[n][key][1] for n in names],
            [summary[n][key][2] - summary[n][key][0] for n in names],
        ]
        ax.bar([i + off for i in x], m, w, yerr=err, capsize=3, label=lab)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("NLL increase (nats/token)")
    ax.legend()
    ax.set_title(title, fontsize=9)
    if len(axes[0]) > 1:
        ax2 = axes[0][1]
        allnames = list(summary)
        ax2.bar(range(len(allnames)), [summary[n]["accuracy"] for n in allnames], color="tab:green")
        ax2.set_xticks(range(len(allnames)))
        ax2.set_xticklabels(allnames, rotation=30)
        ax2.set_ylabel(acc_label)
    fig.tight_layout()
    from yfpo.utils import atomic_savefig

    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)
