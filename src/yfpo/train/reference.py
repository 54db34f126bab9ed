"""Reference log-probs (and the reference neuron margin m_ref) computed once, stored in a file, checked on load.

    compute_reference(cfg: TrainConfig, neuron_sets: dict[str, NeuronSet] | None = None,
                      out: str | Path | None = None) -> Path          (train/precompute.py: it builds a trainer)

runs the reference model (cfg.model, no adapters, no grad) once over cfg.pairs, tokenized exactly as
`yfpo train` tokenizes them, and writes a JSON file (default OUT = cfg.output_dir/reference.json) with

    format, key (sha256 of key_inputs), key_inputs {model, model_sha256 (TRL's hash_module of the weights),
    pairs, pairs_sha256, limit_pairs, step_dpo, max_length, truncation_mode, tokens_sha256 (the tokenized
    prompt/chosen/rejected ids, so a different tokenizer or chat template changes the key)},
    n_pairs, ref_chosen_logps [n], ref_rejected_logps [n],
    m_ref {name: {neurons_sha256, phi_chosen [n], phi_rejected [n], m_ref [n]}}   (one entry per NeuronSet)

in training-dataset order. `yfpo train --ref_logps FILE` (TrainConfig.ref_logps) feeds it to the trainer instead of
TRL's own precompute; a file whose key does not match the run's model / pairs / tokenization is refused, naming
the inputs that differ. The trainer takes m_ref for its calibration (and for yoked_ref) from the entry whose
neurons_sha256 equals its NeuronSet's, and computes it itself when there is none.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

FORMAT = "yfpo-reference/1"


def neuronset_digest(ns) -> str:
    """sha256 of what phi depends on: layers, indices, mean, std, signs (not the provenance)."""
    h = hashlib.sha256()
    for t in (ns.layers, ns.indices, ns.mean, ns.std, ns.signs):
        t = torch.as_tensor(t).detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def tokens_digest(dataset) -> str:
    h = hashlib.sha256()
    for col in ("prompt_ids", "chosen_ids", "rejected_ids"):
        for ids in dataset[col]:
            h.update(json.dumps(ids).encode())
            h.update(b";")
    return h.hexdigest()


def key_inputs(cfg, model_sha256: str, dataset, args) -> dict:
    from yfpo.data.pair_sources import source_identity
    from yfpo.utils import sha256_file

    return {
        "model": str(cfg.model),
        "model_sha256": model_sha256,
        "pairs": str(cfg.pairs),
        "pairs_sha256": sha256_file(cfg.pairs) if Path(cfg.pairs).is_file() else source_identity(cfg.pairs),
        "limit_pairs": cfg.limit_pairs,
        "step_dpo": cfg.step_dpo,
        "max_length": args.max_length,
        "truncation_mode": getattr(args, "truncation_mode", None),
        "tokens_sha256": tokens_digest(dataset),
    }


def key_of(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def load_reference(path: str | Path, expected_inputs: dict) -> dict:
    """Read a reference file and refuse it unless it was computed for exactly these inputs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ref_logps {path}: no such file (write one with `yfpo precompute-ref`)")
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"ref_logps {path}: format {data.get('format')!r}, expected {FORMAT!r}")
    got = data.get("key_inputs", {})
    if data.get("key") != key_of(expected_inputs) or got != expected_inputs:
        diff = sorted(k for k in set(got) | set(expected_inputs) if got.get(k) != expected_inputs.get(k))
        raise ValueError(
            f"ref_logps {path} was computed for other inputs (differ: {', '.join(diff) or 'key'}); "
            "recompute it with `yfpo precompute-ref` for this model, pairs file and tokenization"
        )
    return data


def reference_pass(trainer, dataset, captures: dict | None = None, batch_size: int | None = None) -> dict:
    """One no-grad pass of the trainer's reference over `dataset` in order: per-pair reference log-probs and, for
    each NeuronCapture in `captures` (hooked on the reference module), phi chosen / rejected and m_ref."""
    from torch.utils.data import DataLoader

    from yfpo.neurons.capture import neuron_margin

    captures = captures or {}
    bs = batch_size or trainer.args.per_device_train_batch_size
    cols = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids") if c in dataset.column_names]
    dl = DataLoader(dataset.select_columns(cols), batch_size=bs, collate_fn=trainer.data_collator, shuffle=False)
    model = trainer.ref_model if trainer.ref_model is not None else trainer.model
    out = {"ref_chosen_logps": [], "ref_rejected_logps": []}
    phis = {name: ([], []) for name in captures}
    was_training = model.training
    model.eval()
    try:
        for batch in dl:
            batch = {k: v.to(trainer.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with contextlib.ExitStack() as windows:
                for cap in captures.values():
                    windows.enter_context(cap.window("ref"))
                with trainer.shared_prompt(batch, model, list(captures.values())):
                    c, r = trainer.compute_ref_log_probs(model, batch)
            out["ref_chosen_logps"].append(c.detach().float().cpu())
            out["ref_rejected_logps"].append(r.detach().float().cpu())
            for name, cap in captures.items():
                w, l, _ = neuron_margin(cap.phi("ref", batch["completion_mask"]).detach().float().cpu())
                cap.clear()
                phis[name][0].append(w)
                phis[name][1].append(l)
    finally:
        model.train(was_training)
    res = {k: torch.cat(v) for k, v in out.items()}
    res["m_ref"] = {}
    for name, (w, l) in phis.items():
        w, l = torch.cat(w), torch.cat(l)
        res["m_ref"][name] = {"phi_chosen": w, "phi_rejected": l, "m_ref": w - l}
    return res


def reference_for(trainer, dataset, name: str, batch_size: int) -> dict:
    """Per-pair reference log-probs of `dataset` (and m_ref when the trainer has a NeuronSet): read from the
    config's `ref_logps` file for the training set (refused unless its key matches), else one reference_pass."""
    cfg = trainer.args
    if cfg.ref_logps and name == "train":
        data = load_reference(cfg.ref_logps, _key_inputs_of(trainer, dataset))
        res = {
            "ref_chosen_logps": torch.tensor(data["ref_chosen_logps"]),
            "ref_rejected_logps": torch.tensor(data["ref_rejected_logps"]),
            "m_ref": {},
            "source": cfg.ref_logps,
        }
        if trainer.neuron_set is not None:
            want = neuronset_digest(trainer.neuron_set)
            for entry in data.get("m_ref", {}).values():
                if entry.get("neurons_sha256") == want:
                    res["m_ref"]["run"] = {k: torch.tensor(entry[k]) for k in ("phi_chosen", "phi_rejected", "m_ref")}
                    break
        return res
    caps = {"run": trainer.ref_capture} if trainer.ref_capture is not None else None
    res = reference_pass(trainer, dataset, caps, batch_size)
    res["source"] = "pass"
    return res


def _key_inputs_of(trainer, dataset) -> dict:
    from trl.trainer.utils import hash_module

    ident = trainer.ref_identity
    if ident is None:
        if trainer.ref_model is None and hasattr(trainer.model, "peft_config"):
            raise RuntimeError("ref_logps with LoRA: pass ref_identity (hash of the base model) to YFPOTrainer")
        ident = trainer.ref_identity = hash_module(
            trainer.ref_model if trainer.ref_model is not None else trainer.model
        )
    return key_inputs(trainer.args, ident, dataset, trainer.args)
