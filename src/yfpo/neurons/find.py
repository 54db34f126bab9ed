"""`yfpo neurons find`: score every neuron on a math and a contrast corpus and write a NeuronSet.

Methods behind one interface (SPEC section 2):
- ``attnlrp`` (default): mean per-sample-normalised AttnLRP relevance on math minus on contrast;
- ``actgrad``: the same with plain activation x gradient (no LRP rules);
- ``lape``: activation probability (fraction of response tokens whose activation-function output is
  > 0, as in LAPE) on math minus on contrast -- the two-domain analogue of LAPE's entropy criterion;
- ``random``: random neurons, with the per-layer counts of `match` (a NeuronSet) when given.
The per-neuron activation mean/std stored in the file always come from the math-corpus pass.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from yfpo.neurons.config import METHODS, NeuronsConfig

TARGET = "sum over response positions of the gold next-token logit (teacher-forced)"


def work_dir_for(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f"{out.stem}_work"


def find_neurons(cfg: NeuronsConfig, overwrite: bool = False) -> Path:
    """Run the find stage; returns the path of the NeuronSet file (cfg.out). Resumable; a work folder made by
    another config is refused (yfpo.resume) unless overwrite, which empties it.
    Long: the stage in order (validate, claim the work folder, load, relevance on both corpora, scores, selection,
    record), with its resume checks between the steps. Next to split (docs/ARCHITECTURE.md)."""
    from yfpo.config import save_config, to_dict
    from yfpo.data.corpora import contrast_corpus, math_corpus
    from yfpo.models import arch
    from yfpo.models.loading import load_model, state_hash
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.neurons.relevance import POSITIONS, POSITIONS_TEXT, corpus_relevance
    from yfpo.neurons.select import CRITERIA, criterion_score, math_score, resolve_k, select_random, select_top
    from yfpo.utils import atomic_write_json, now, versions
    from yfpo.version import __version__

    if cfg.method not in METHODS:
        raise ValueError(f"neurons find: method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.criterion not in CRITERIA:
        raise ValueError(f"neurons find: criterion must be one of {', '.join(CRITERIA)}, got {cfg.criterion!r}")
    if cfg.criterion != "diff" and cfg.method not in ("attnlrp", "actgrad"):
        raise ValueError(
            f"neurons find: criterion {cfg.criterion!r} needs method attnlrp or actgrad, got {cfg.method!r}"
        )
    if isinstance(cfg.k, bool) or not cfg.k > 0:
        raise ValueError(f"neurons find: k must be > 0 (a count >= 1 or a fraction in (0, 1)), got {cfg.k}")
    t0 = time.time()
    out = Path(cfg.out)
    work = work_dir_for(out)
    from yfpo.resume import claim

    claim(work, "neurons", to_dict(cfg), overwrite=overwrite)
    save_config(cfg, work / "config.yaml")
    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    L, W = arch.neuron_shape(model)
    sources = tuple(s.strip() for s in cfg.contrast_sources.split(",") if s.strip())
    math_recs = math_corpus(cfg.n_math, cfg.seed, cfg.data_dir, split=cfg.math_split)
    con_recs = (
        contrast_corpus(cfg.n_contrast, cfg.seed, cfg.data_dir, sources=sources) if cfg.method != "random" else []
    )

    pass_method = {"attnlrp": "attnlrp", "actgrad": "actgrad", "lape": "forward", "random": "forward"}[cfg.method]
    kw = dict(
        method=pass_method,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        device=cfg.device,
        progress=cfg.progress,
    )
    ms = corpus_relevance(
        model, tok, math_recs, work_dir=work / f"math-{pass_method}", desc=f"math ({pass_method})", **kw
    )
    cs = None
    if con_recs:
        cs = corpus_relevance(
            model, tok, con_recs, work_dir=work / f"contrast-{pass_method}", desc=f"contrast ({pass_method})", **kw
        )

    grids: dict[str, Any] = {"act_mean_math": ms.act_mean, "act_std_math": ms.act_std, "act_prob_math": ms.act_prob}
    if cfg.method in ("attnlrp", "actgrad"):
        score = criterion_score(
            cfg.criterion,
            ms.relevance_mean,
            cs.relevance_mean,
            math_sq_mean=ms.relevance_sq_mean,
            contrast_sq_mean=cs.relevance_sq_mean,
            n_math=ms.n_samples,
            n_contrast=cs.n_samples,
            exclude_quantile=cfg.exclude_quantile,
        )
        grids.update(
            relevance_math=ms.relevance_mean,
            relevance_contrast=cs.relevance_mean,
            relevance_sq_math=ms.relevance_sq_mean,
            relevance_sq_contrast=cs.relevance_sq_mean,
            n_math=ms.n_samples,
            n_contrast=cs.n_samples,
        )
    elif cfg.method == "lape":
        score = math_score(ms.act_prob, cs.act_prob)
        grids.update(act_prob_contrast=cs.act_prob)
    else:
        score = None
    if cs is not None:
        grids.update(act_mean_contrast=cs.act_mean, act_std_contrast=cs.act_std)

    if score is not None:
        grids["score"] = score
        layers, indices = select_top(score, cfg.k, cfg.selection)
        scores = score[layers, indices]
        k_resolved = len(layers)
    else:
        if cfg.match:
            ref = NeuronSet.load(cfg.match, model=model)
            counts = ref.per_layer_counts()
        else:
            n = resolve_k(cfg.k, L * W if cfg.selection == "global" else W)
            if cfg.selection == "per_layer":
                counts = [n] * L
            else:
                g = torch.Generator().manual_seed(cfg.seed)
                flat = torch.randperm(L * W, generator=g)[:n]
                counts = torch.bincount(flat // W, minlength=L).tolist()
        layers, indices = select_random(counts, W, cfg.seed)
        scores = torch.zeros(len(layers))  # no math score for random neurons (sign +1)
        k_resolved = len(layers)
    torch.save(grids, work / "grids.pt.tmp")
    (work / "grids.pt.tmp").replace(work / "grids.pt")  # atomic

    prov = {
        "model": cfg.model,
        "model_name_or_path": getattr(arch.unwrap(model).config, "_name_or_path", cfg.model),
        "family": arch.get_arch(model).family,
        "model_type": arch.model_type_of(model),
        "weight_hash": state_hash(model),
        "num_layers": L,
        "intermediate_size": W,
        "neuron": "input of the MLP down projection",
        "method": cfg.method,
        "target": TARGET if pass_method != "forward" else None,
        "normalisation": "per sample, divided by the sum of |relevance| over all neurons"
        if pass_method != "forward"
        else None,
        "score": {
            "attnlrp": "mean normalised AttnLRP relevance: math minus contrast",
            "actgrad": "mean normalised activation x gradient: math minus contrast",
            "lape": "activation probability (act_fn output > 0 over response tokens): math minus contrast",
            "random": "none (random neurons; score 0)",
        }[cfg.method],
        "corpora": {
            "math": {"name": f"gsm8k_{cfg.math_split}", "n": ms.n_samples, "tokens": ms.n_tokens, "seed": cfg.seed},
            "contrast": (
                {"name": "+".join(sources), "n": cs.n_samples, "tokens": cs.n_tokens, "seed": cfg.seed}
                if cs is not None
                else None
            ),
        },
        "stats": "activation mean/std over the response positions of the math corpus",
        "positions": POSITIONS,
        "positions_text": POSITIONS_TEXT,
        "criterion": cfg.criterion if cfg.method in ("attnlrp", "actgrad") else None,
        "exclude_quantile": cfg.exclude_quantile if cfg.criterion == "exclude_both" else None,
        "k": cfg.k,
        "k_resolved": k_resolved,
        "selection": cfg.selection,
        "match": cfg.match,
        "seed": cfg.seed,
        "max_length": cfg.max_length,
        "tool": "yfpo",
        "tool_version": __version__,
        "versions": versions(),
        "date": now(),
        "time_s": round(time.time() - t0, 1),
        "config": to_dict(cfg),
    }
    ns = NeuronSet(
        layers, indices, scores, ms.act_mean[layers, indices], ms.act_std[layers, indices].clamp_min(1e-6), prov
    )
    ns.save(out)
    atomic_write_json(work / "done.json", {"neurons": str(out), "n": len(ns), "time_s": prov["time_s"]})
    return out
