"""`compute_reference`: the reference file of train/reference.py, computed by a trainer of train/trainer.py (so the
pairs are tokenized exactly as `yfpo train` tokenizes them). It lives here, above both, so that the trainer can read
reference files without the reference module importing the trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trl.trainer.utils import hash_module

from yfpo.models import load_model
from yfpo.neurons.capture import NeuronCapture
from yfpo.train.reference import FORMAT, key_inputs, key_of, neuronset_digest, reference_pass
from yfpo.train.trainer import make_trainer
from yfpo.utils import atomic_write_json


def compute_reference(
    cfg, neuron_sets: dict | None = None, out: str | Path | None = None, *, model=None, tokenizer=None
) -> Path:
    """Compute the reference file for `cfg` (model, pairs, tokenization) and each NeuronSet; returns its path.

    cfg: a TrainConfig (its model, pairs, limit_pairs, step_dpo, max_length and batch_size are used; gamma, lora
    and the loss settings are irrelevant). neuron_sets: {name: NeuronSet} whose m_ref ride on the same pass.
    out: file path (default cfg.output_dir/reference.json). Written atomically; the same file serves every method
    and seed that shares the model, pairs and tokenization (`yfpo train --ref_logps FILE`).
    model/tokenizer: an already loaded cfg.model (tests); it is not modified.
    """
    base = dataclasses.replace(
        cfg,
        gamma=0.0,
        neurons=None,
        ref_logps=None,
        precompute_ref_log_probs=False,
        lora=False,
        fdt=False,
        gamma_mode="fixed",
        eval_pairs=None,
    )
    base.validate()
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.load_device)
    tok = tokenizer
    model_sha = hash_module(model)
    out = Path(out) if out is not None else Path(cfg.output_dir) / "reference.json"
    trainer, _ = make_trainer(base, model=model, tokenizer=tok, out=out.parent / ".reference_tmp")
    ref_module = trainer.ref_model if trainer.ref_model is not None else trainer.model
    captures = {name: NeuronCapture(ref_module, ns) for name, ns in (neuron_sets or {}).items()}
    try:
        res = reference_pass(trainer, trainer.train_dataset, captures)
    finally:
        for cap in captures.values():
            cap.remove()
    inputs = key_inputs(cfg, model_sha, trainer.train_dataset, trainer.args)
    data = {
        "format": FORMAT,
        "key": key_of(inputs),
        "key_inputs": inputs,
        "n_pairs": len(res["ref_chosen_logps"]),
        "ref_chosen_logps": res["ref_chosen_logps"].tolist(),
        "ref_rejected_logps": res["ref_rejected_logps"].tolist(),
        "m_ref": {
            name: {"neurons_sha256": neuronset_digest(neuron_sets[name]), **{k: v.tolist() for k, v in d.items()}}
            for name, d in res["m_ref"].items()
        },
    }
    atomic_write_json(out, data)
    return out
