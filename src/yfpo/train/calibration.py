"""The scale of the neuron margin (SPEC section 3 "Scale"), measured once before step 0.

With neuron_norm ref_std the reference model runs once without grad over the training pairs (the same pass as TRL's
reference-log-prob precompute when that is on, or read from a `ref_logps` file), m_ref is taken per pair, and the
loss reads m' = m / std(m_ref) ((m - mean(m_ref)) / std with neuron_center; (m - m_ref) / std with yoked_ref).
gamma_mode grad_ratio then sets gamma = rho * ||grad beta*delta|| / ||grad m'|| at step 0. calibration.json
(written atomically in the run directory) holds the constants, m_ref per pair and gamma_eff; a rerun with the same
key reuses it. The functions take the YFPOTrainer whose pass and policy forward they use.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from yfpo.neurons.capture import neuron_margin
from yfpo.train.diagnostics import norm
from yfpo.train.reference import neuronset_digest, reference_pass
from yfpo.utils import atomic_write_json, sha256_file

FILE = "calibration.json"


def needed(cfg) -> bool:
    return cfg.neuron_norm == "ref_std" or cfg.neuron_center or cfg.gamma_mode == "grad_ratio"


def normalise_margin(cfg, calibration: dict | None, m: torch.Tensor, m_ref: torch.Tensor | None) -> torch.Tensor:
    """The margin the loss uses: m (raw), m - m_ref (yoked_ref), m - mean(m_ref) (neuron_center), / std(m_ref)."""
    if cfg.variant == "yoked_ref":
        if m_ref is None:
            raise RuntimeError("variant yoked_ref: no reference margin m_ref for this batch")
        m = m - m_ref.to(m.device, m.dtype)
    elif cfg.neuron_center and calibration is not None:
        m = m - calibration["mean"]
    if cfg.neuron_norm == "ref_std" and calibration is not None:
        m = m / calibration["std"]
    return m


def key(trainer) -> dict:
    """What the calibration depends on (a calibration.json with another key is recomputed)."""
    c = trainer.args
    return {
        "pairs_sha256": sha256_file(c.pairs) if c.pairs and Path(c.pairs).is_file() else None,
        "n_pairs": len(trainer.train_dataset),
        "neurons_sha256": neuronset_digest(trainer.neuron_set),
        "model": str(c.model),
        "neuron_norm": c.neuron_norm,
        "neuron_center": c.neuron_center,
        "variant": c.variant,
        "gamma": c.gamma,
        "gamma_mode": c.gamma_mode,
        "grad_ratio_rho": c.grad_ratio_rho,
        "grad_ratio_batches": c.grad_ratio_batches,
        "beta": c.beta,
        "max_length": c.max_length,
    }


def calibrate(trainer, train_reference: dict | None = None) -> dict:
    """m_ref per training pair (reference, no grad) -> std, mean (-> calibration.json, reused on resume)."""
    path = trainer.run_dir / FILE if trainer.run_dir is not None else None
    k = key(trainer)
    if path is not None and path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") == k:
            return old
    ref = train_reference
    if ref is None or "run" not in ref["m_ref"]:
        bs = trainer.args.precompute_ref_batch_size or trainer.args.per_device_train_batch_size
        ref = reference_pass(trainer, trainer.train_dataset, {"run": trainer.ref_capture}, bs)
        ref["source"] = "pass"
    m_ref = ref["m_ref"]["run"]["m_ref"].double()
    if m_ref.numel() < 2:
        raise ValueError("neuron_norm ref_std needs at least 2 training pairs to measure std(m_ref)")
    acc = trainer.accelerator
    # every process computes the same pairs; the constants are averaged so all ranks use one value
    stats = acc.reduce(torch.tensor([float(m_ref.mean()), float(m_ref.std())], device=acc.device), reduction="mean")
    mean, std = float(stats[0]), float(stats[1])
    if not std > 0:
        raise ValueError(
            f"std(m_ref) = {std} over {m_ref.numel()} pairs: the neuron margin does not vary; "
            "use neuron_norm raw or other pairs / neurons"
        )
    c = trainer.args
    cal = {
        "key": k,
        "norm": c.neuron_norm,
        "center": c.neuron_center,
        "constant": std if c.neuron_norm == "ref_std" else 1.0,
        "n_pairs": int(m_ref.numel()),
        "mean": mean,
        "std": std,
        "mean_over_std": mean / std,
        "std_convention": "sample (n-1)",
        "m_ref": m_ref.tolist(),
        "m_ref_source": ref.get("source", "pass"),
        "gamma": c.gamma,
        "gamma_mode": c.gamma_mode,
        "gamma_eff": c.gamma,
        "processes": acc.num_processes,
    }
    if c.gamma_mode == "grad_ratio":
        gr = grad_ratio(trainer, cal)
        cal["grad_ratio"] = gr
        cal["gamma_eff"] = gr["gamma"]
    if path is not None and acc.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cal)
    acc.wait_for_everyone()
    return cal


def grad_ratio(trainer, calibration: dict) -> dict:
    """gamma = rho * ||grad mean(beta*delta)|| / ||grad mean(m')|| at step 0, averaged over a few batches
    (m' = the normalised margin the loss uses); delta's reference part is constant, so only the policy log-probs."""
    c = trainer.args
    ds = trainer.train_dataset
    cols = [k for k in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_neuron_margin") if k in ds.column_names]
    dl = DataLoader(ds.select_columns(cols), batch_size=c.per_device_train_batch_size, collate_fn=trainer.data_collator)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    nd, nm = [], []
    for i, batch in enumerate(dl):
        if i >= c.grad_ratio_batches:
            break
        batch = {k: v.to(trainer.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        pol = trainer.policy_forward(trainer.model, batch, fdt=False)  # the plain head, as the loss's delta
        w, l = pol.logps.chunk(2)
        _, _, m = neuron_margin(pol.phi)
        m_ref = batch.get("ref_neuron_margin")
        if c.variant == "yoked_ref" and m_ref is None:
            m_ref = trainer.live_reference_margin(batch)
        mn = normalise_margin(c, calibration, m, m_ref)
        gd = torch.autograd.grad((c.beta * (w - l)).mean(), params, retain_graph=True, allow_unused=True)
        gm = torch.autograd.grad(mn.mean(), params, allow_unused=True)
        nd.append(norm(gd))
        nm.append(norm(gm))
    d, mm = sum(nd) / len(nd), sum(nm) / len(nm)
    if not mm > 0:
        raise ValueError("gamma_mode grad_ratio: the neuron margin has zero gradient at step 0")
    gamma = c.grad_ratio_rho * d / mm * (1.0 if c.gamma > 0 else -1.0)
    return {
        "rho": c.grad_ratio_rho,
        "batches": len(nd),
        "grad_beta_delta_norms": nd,
        "grad_margin_norms": nm,
        "mean_grad_beta_delta_norm": d,
        "mean_grad_margin_norm": mm,
        "gamma": gamma,
    }
