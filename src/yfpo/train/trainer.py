"""Preference training on TRL's DPOTrainer, with the YFPO neuron reward and the FDT plug-in.

`YFPOTrainer` subclasses trl.DPOTrainer (trl 1.16) and overrides only `_compute_loss` (the loss of one
stacked [chosen; rejected] batch) and `_prepare_dataset` (Step-DPO: no end-of-sequence token on steps).
Everything else — tokenization, collation, reference handling (a reference copy, LoRA adapters disabled,
or precomputed reference log-probs), gradient checkpointing, checkpoints and resume, accelerate/DDP — is
TRL's and transformers'. `train(cfg)` builds a run directory:

    OUT/config.yaml  versions.json  metrics.jsonl  calibration.json  checkpoints/checkpoint-N/  final/  train_done.json

config.hash.json records the config (yfpo.resume): a rerun with another config is refused, not resumed.
metrics.jsonl is append-only; a resume appends {"event": "resume", "step": N} (read with utils.read_metrics).

Neuron-reward scale (SPEC section 3 "Scale"): with neuron_norm ref_std (default) the trainer runs the reference once
without grad over the training pairs before step 0 (the same pass as TRL's reference-log-prob precompute when that
is on, or read from a `ref_logps` file from yfpo.train.reference), takes m_ref per pair, and trains on m / std(m_ref)
((m - mean(m_ref)) / std with neuron_center; (m - m_ref) / std with yoked_ref). calibration.json (atomic) holds the
constants, m_ref per pair and gamma_eff (grad_ratio inputs too); a rerun with the same settings reuses it.
Logged: neuron/gamma_eff, neuron/logit_share = |gamma m'| / (|beta delta'| + |gamma m'|) each step and, on logging
steps, neuron/grad_share (grad_share: None = on with LoRA, off for full fine-tuning; off under DDP).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import TrainerCallback
from trl import DPOTrainer

from yfpo.log import get_logger
from yfpo.models import arch
from yfpo.models.packing import PACKABLE_ATTENTION, backbone_of, pack_pairs, run_packed
from yfpo.neurons.capture import NeuronCapture, neuron_margin
from yfpo.train.config import TrainConfig
from yfpo.train.fdt import add_fdt_head, check_fdt_supported
from yfpo.train.losses import aux_neuron_loss, combined_loss, preference_type

logger = get_logger(__name__)


class YFPOTrainer(DPOTrainer):
    """DPOTrainer + neuron reward (gamma, variant, lam) + FDT. With gamma=0 and fdt=False it trains as TRL does
    (exactly with share_prompt off; with it on, each pair's prompt runs once and results agree up to float rounding)."""

    def __init__(
        self,
        *args,
        neuron_set=None,
        step_dpo: bool = False,
        run_dir=None,
        ref_identity: str | None = None,
        **kwargs,
    ):
        """Like DPOTrainer; `args` is a TrainConfig (trl.DPOConfig + yfpo's keys: gamma, variant, fdt, ...)."""
        yfpo = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(yfpo, TrainConfig):
            raise TypeError(f"YFPOTrainer needs args=TrainConfig(...) (a trl.DPOConfig with yfpo's keys), got {yfpo!r}")
        yfpo.validate()
        self.step_dpo = step_dpo
        if yfpo.gamma != 0 and neuron_set is None:
            raise ValueError("gamma != 0 needs a NeuronSet (--neurons PATH from `yfpo neurons find`)")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.ref_identity = ref_identity
        self.neuron_set = neuron_set
        self.calibration: dict | None = None
        self.gamma_eff = float(yfpo.gamma)
        self._ref_file = None
        super().__init__(*args, **kwargs)  # TRL's precompute (if on) is deferred to _precompute_ref_logps below
        gc_kwargs = self.args.gradient_checkpointing_kwargs or {}
        if yfpo.gamma != 0 and self.args.gradient_checkpointing and gc_kwargs.get("use_reentrant", False):
            raise ValueError(
                "the neuron reward needs non-reentrant gradient checkpointing (use_reentrant=False): "
                "reentrant checkpointing runs the forward without autograd and would cut the margin's gradient"
            )
        if yfpo.fdt:
            check_fdt_supported(self.model)
            add_fdt_head(arch.unwrap(self.model))  # TRL added its fused head first; this wraps it
        self.capture = NeuronCapture(self.model, neuron_set) if neuron_set is not None else None
        self.ref_capture = None
        if neuron_set is not None:  # with LoRA the reference is the same module: one capture, two windows
            self.ref_capture = NeuronCapture(self.ref_model, neuron_set) if self.ref_model is not None else self.capture
        self._pack_ok: dict[int, bool] = {}  # share_prompt: per backbone, whether its packed forward was checked
        self.share_prompt_batches = 0  # forwards (policy or reference) run on packed rows
        self.data_collator = _KeepRefMargin(self.data_collator)
        if self.precompute_ref_logps:  # TRL's precompute pass, run here once the neuron hooks exist (m_ref rides on it)
            bs = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            self.train_dataset = self._precompute_ref_logps(self.train_dataset, "train", bs)
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._precompute_ref_logps(v, k, bs) for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._precompute_ref_logps(self.eval_dataset, "eval", bs)
        if neuron_set is not None and yfpo.gamma != 0 and self._needs_calibration():
            self.calibration = self._calibrate()
            self.gamma_eff = float(self.calibration["gamma_eff"])

    # -- Step-DPO: TRL appends EOS to plain-text completions; a step is not the end of the answer
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        n_in = len(dataset)
        ds = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        # TRL drops pairs whose prompt alone fills max_length (their completions would be empty): count them
        self.dropped_prompt_too_long = n_in - len(ds)
        if self.dropped_prompt_too_long:
            import warnings

            warnings.warn(
                f"{self.dropped_prompt_too_long} of {n_in} {dataset_name} pairs dropped: prompt of >= "
                f"max_length={args.max_length} tokens leaves no completion token",
                stacklevel=2,
            )
        if n_in and not len(ds):
            raise ValueError(
                f"all {n_in} pairs have a prompt of >= max_length={args.max_length} tokens (nothing "
                "would be learned); raise max_length"
            )
        if getattr(self, "step_dpo", False):
            eos = processing_class.eos_token_id

            def strip(ex):
                for k in ("chosen_ids", "rejected_ids"):
                    if ex[k] and ex[k][-1] == eos:
                        ex[k] = ex[k][:-1]
                return ex

            ds = ds.map(strip, desc="Step-DPO: no EOS on step completions")
        return ds

    @property
    def ycfg(self) -> TrainConfig:
        """The run's TrainConfig (TRL's args with yfpo's keys)."""
        return self.args

    def _metric(self, mode: str, key: str, value: torch.Tensor) -> None:
        self._metrics[mode][key].append(
            self.accelerator.gather_for_metrics(value.detach().float().reshape(-1)).mean().item()
        )

    # -- reference pass: TRL's precompute, replaced by one pass that also records m_ref, or read from a file
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "ref_neuron_margin" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "ref_neuron_margin"]

    def _ref_key_inputs(self, dataset) -> dict:
        from trl.trainer.utils import hash_module

        from yfpo.train.reference import key_inputs

        ident = self.ref_identity
        if ident is None:
            if self.ref_model is None and hasattr(self.model, "peft_config"):
                raise RuntimeError("ref_logps with LoRA: pass ref_identity (hash of the base model) to YFPOTrainer")
            ident = self.ref_identity = hash_module(self.ref_model if self.ref_model is not None else self.model)
        return key_inputs(self.ycfg, ident, dataset, self.args)

    def _reference_for(self, dataset, name: str, batch_size: int) -> dict:
        """Per-pair reference log-probs (and m_ref when there is a NeuronSet), from the file or one pass."""
        from yfpo.train.reference import load_reference, neuronset_digest, reference_pass

        cfg = self.ycfg
        if cfg.ref_logps and name == "train":
            data = load_reference(cfg.ref_logps, self._ref_key_inputs(dataset))
            res = {
                "ref_chosen_logps": torch.tensor(data["ref_chosen_logps"]),
                "ref_rejected_logps": torch.tensor(data["ref_rejected_logps"]),
                "m_ref": {},
                "source": cfg.ref_logps,
            }
            if self.neuron_set is not None:
                want = neuronset_digest(self.neuron_set)
                for entry in data.get("m_ref", {}).values():
                    if entry.get("neurons_sha256") == want:
                        res["m_ref"]["run"] = {
                            k: torch.tensor(entry[k]) for k in ("phi_chosen", "phi_rejected", "m_ref")
                        }
                        break
            return res
        caps = {"run": self.ref_capture} if self.ref_capture is not None else None
        res = reference_pass(self, dataset, caps, batch_size)
        res["source"] = "pass"
        return res

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not hasattr(self, "capture"):  # called from DPOTrainer.__init__: deferred until the hooks exist
            return dataset
        res = self._reference_for(dataset, name, batch_size)
        if name == "train":
            self._train_reference = res
        cols = {
            "ref_chosen_logps": res["ref_chosen_logps"].tolist(),
            "ref_rejected_logps": res["ref_rejected_logps"].tolist(),
        }
        if "run" in res["m_ref"]:
            cols["ref_neuron_margin"] = res["m_ref"]["run"]["m_ref"].tolist()
        if len(cols["ref_chosen_logps"]) != len(dataset):
            raise ValueError(
                f"reference log-probs: {len(cols['ref_chosen_logps'])} pairs for a {name} dataset of {len(dataset)}"
            )
        for k, v in cols.items():
            if k in dataset.column_names:
                dataset = dataset.remove_columns(k)
            dataset = dataset.add_column(k, v)
        return dataset

    # -- calibration of the neuron margin (SPEC section 3 "Scale")
    def _needs_calibration(self) -> bool:
        c = self.ycfg
        return c.neuron_norm == "ref_std" or c.neuron_center or c.gamma_mode == "grad_ratio"

    def _calibration_key(self) -> dict:
        from yfpo.train.reference import neuronset_digest
        from yfpo.utils import sha256_file

        c = self.ycfg
        return {
            "pairs_sha256": sha256_file(c.pairs) if c.pairs and Path(c.pairs).is_file() else None,
            "n_pairs": len(self.train_dataset),
            "neurons_sha256": neuronset_digest(self.neuron_set),
            "model": str(c.model),
            "neuron_norm": c.neuron_norm,
            "neuron_center": c.neuron_center,
            "variant": c.variant,
            "gamma": c.gamma,
            "gamma_mode": c.gamma_mode,
            "grad_ratio_rho": c.grad_ratio_rho,
            "grad_ratio_batches": c.grad_ratio_batches,
            "beta": c.beta,
            "max_length": self.args.max_length,
        }

    def _calibrate(self) -> dict:
        """m_ref per training pair (reference, no grad) -> std, mean (-> calibration.json, reused on resume)."""
        from yfpo.utils import atomic_write_json

        path = self.run_dir / "calibration.json" if self.run_dir is not None else None
        key = self._calibration_key()
        if path is not None and path.is_file():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return old
        ref = getattr(self, "_train_reference", None)
        if ref is None or "run" not in ref["m_ref"]:
            bs = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            from yfpo.train.reference import reference_pass

            ref = reference_pass(self, self.train_dataset, {"run": self.ref_capture}, bs)
            ref["source"] = "pass"
        m_ref = ref["m_ref"]["run"]["m_ref"].double()
        if m_ref.numel() < 2:
            raise ValueError("neuron_norm ref_std needs at least 2 training pairs to measure std(m_ref)")
        # every process computes the same pairs; the constants are averaged so all ranks use one value
        stats = torch.tensor([float(m_ref.mean()), float(m_ref.std())], device=self.accelerator.device)
        stats = self.accelerator.reduce(stats, reduction="mean").cpu()
        mean, std = float(stats[0]), float(stats[1])
        if not std > 0:
            raise ValueError(
                f"std(m_ref) = {std} over {m_ref.numel()} pairs: the neuron margin does not vary; "
                "use neuron_norm raw or other pairs / neurons"
            )
        c = self.ycfg
        cal = {
            "key": key,
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
            "processes": self.accelerator.num_processes,
        }
        self.calibration = cal
        if c.gamma_mode == "grad_ratio":
            gr = self._grad_ratio()
            cal["grad_ratio"] = gr
            cal["gamma_eff"] = gr["gamma"]
        if path is not None and self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, cal)
        self.accelerator.wait_for_everyone()
        return cal

    def _grad_ratio(self) -> dict:
        """gamma = rho * ||grad mean(beta*delta)|| / ||grad mean(m')|| at step 0, averaged over a few batches
        (m' = the normalised margin the loss uses); delta's reference part is constant, so only the policy log-probs."""
        from torch.utils.data import DataLoader

        c = self.ycfg
        ds = self.train_dataset
        cols = [k for k in ("prompt_ids", "chosen_ids", "rejected_ids", "ref_neuron_margin") if k in ds.column_names]
        dl = DataLoader(
            ds.select_columns(cols),
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        nd, nm = [], []
        for i, batch in enumerate(dl):
            if i >= c.grad_ratio_batches:
                break
            batch = {k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            logps, phi = self._policy_logps_phi(self.model, batch)
            w, l = logps.chunk(2)
            _, _, m = neuron_margin(phi)
            m_ref = batch.get("ref_neuron_margin")
            if c.variant == "yoked_ref" and m_ref is None:
                with self.ref_capture.window("ref"):
                    self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, batch)
                _, _, m_ref = neuron_margin(self.ref_capture.phi("ref", batch["completion_mask"]).detach())
                self.ref_capture.clear()
            mn = self._normalise_margin(m, m_ref)
            gd = torch.autograd.grad((c.beta * (w - l)).mean(), params, retain_graph=True, allow_unused=True)
            gm = torch.autograd.grad(mn.mean(), params, allow_unused=True)
            nd.append(_norm(gd))
            nm.append(_norm(gm))
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

    def _normalise_margin(self, m: torch.Tensor, m_ref: torch.Tensor | None) -> torch.Tensor:
        """The margin the loss uses: m (raw), m - m_ref (yoked_ref), m - mean(m_ref) (neuron_center), / std(m_ref)."""
        c = self.ycfg
        cal = self.calibration
        if c.variant == "yoked_ref":
            if m_ref is None:
                raise RuntimeError("variant yoked_ref: no reference margin m_ref for this batch")
            m = m - m_ref.to(m.device, m.dtype)
        elif c.neuron_center and cal is not None:
            m = m - cal["mean"]
        if c.neuron_norm == "ref_std" and cal is not None:
            m = m / cal["std"]
        return m

    def _backbone(self, model):
        """The decoder stack of `model` to run on packed rows (share_prompt), or None."""
        if not self.ycfg.share_prompt:
            return None
        causal = arch.unwrap(model)
        if getattr(causal.config, "_attn_implementation", None) not in PACKABLE_ATTENTION:
            return None
        return backbone_of(causal)

    def _pack(self, inputs, model, bb):
        """The PairPack for this batch, or None to run TRL's two rows per pair.

        The first packable batch of each backbone is checked first: its first pair's last hidden states, packed and
        not, in eval mode without gradients; a model that does not reproduce them (no 4-D mask or position-id
        support) runs unpacked from then on."""
        ok = self._pack_ok.get(id(bb))
        if ok is False:
            return None
        dtype = arch.unwrap(model).get_input_embeddings().weight.dtype
        pack = pack_pairs(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], dtype)
        if pack is None or ok:
            return pack
        B = inputs["input_ids"].shape[0] // 2
        one = [0, B]
        ids, att = inputs["input_ids"][one], inputs["attention_mask"][one]
        small = pack_pairs(ids, att, inputs["completion_mask"][one], dtype)
        was_training = bb.training
        bb.eval()
        try:
            with torch.no_grad():
                ref = bb(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
                with run_packed(bb, small):
                    got = bb(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        finally:
            bb.train(was_training)
        keep = att.bool()
        tol = 1e-3 if dtype == torch.float32 else 3e-2
        ok = self._pack_ok[id(bb)] = bool(torch.allclose(got[keep].float(), ref[keep].float(), atol=tol, rtol=tol))
        if not ok:
            logger.warning(
                "[yfpo train] share_prompt: this model's packed forward differs from its plain one; two rows per pair"
            )
        return pack if ok else None

    @contextlib.contextmanager
    def shared_prompt(self, inputs, model=None, captures=()):
        """Around a forward of `model` (default: the policy) on a DPO batch: with share_prompt, its backbone runs on
        packed rows (each pair's prompt once) and both its hidden states and the activations `captures` record
        come back in TRL's two-rows-per-pair layout (yfpo.models.packing)."""
        model = self.model if model is None else model
        bb = self._backbone(model)
        pack = self._pack(inputs, model, bb) if bb is not None else None
        if pack is None:
            yield
            return
        captures = [c for c in captures if c is not None]
        for c in captures:
            c.layout = pack.unpack
        try:
            with run_packed(bb, pack):
                yield
        finally:
            for c in captures:
                c.layout = None
        self.share_prompt_batches += 1

    def _policy_logps_phi(self, model, inputs):
        """Policy forward (neuron activations captured): summed completion log-probs (2B,) and phi (2B,) or None."""
        completion_mask = inputs["completion_mask"]
        seq_len = completion_mask.size(1) - 1
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        cap = self.capture
        with (
            cap.window("policy") if cap is not None else contextlib.nullcontext(),
            self.shared_prompt(inputs, model, [cap]),
        ):
            outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        logps = (outputs.log_probs[:, -seq_len:] * completion_mask[:, 1:]).sum(dim=1)
        phi = None
        if cap is not None:
            phi = cap.phi("policy", completion_mask)
            cap.clear()
        return logps, phi

    def _compute_loss(self, model, inputs, return_outputs):
        cfg = self.ycfg
        if (
            return_outputs
            or self.ld_alpha is not None
            or self.f_divergence_type != "reverse_kl"
            or self.use_weighting
            or self.aux_loss_enabled
        ):
            if cfg.gamma or cfg.fdt:
                raise NotImplementedError(
                    "the neuron reward / FDT support the standard reverse-KL reward (no ld_alpha, no WPO "
                    "weighting, no MoE router loss)"
                )
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[:, 1:]
        seq_len = shift_mask.size(1)
        cap = self.capture

        # ---- policy forward (the only one whose activations are captured)
        if cfg.fdt:  # through the (possibly DDP-wrapped) model, so gradient sync still happens
            model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
            model_kwargs["use_cache"] = False
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            with (
                cap.window("policy") if cap is not None else contextlib.nullcontext(),
                self.shared_prompt(inputs, model, [cap]),
            ):
                outputs = model(**model_kwargs, fdt_labels=labels)
            per_token_logps = outputs.log_probs[:, -seq_len:]
            self._metrics[mode]["fdt/aligned_tokens"].append(float(outputs.aligned_tokens))
            self._metrics[mode]["fdt/hidden_diff_norm"].append(float(outputs.hidden_diff_norm))
            logps = (per_token_logps * shift_mask).sum(dim=1)
            phi = None
            if cap is not None:  # read (and released) before the reference forward
                phi = cap.phi("policy", completion_mask)
                cap.clear()
        else:
            logps, phi = self._policy_logps_phi(model, inputs)
            per_token_logps = None
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)

        # ---- reference log-probs: precomputed (TRL's pass or a reference file), a reference copy, or adapters
        # disabled (TRL's own routine). Like TRL, the reference runs on the unwrapped module, not the DDP wrapper.
        live_mref = cfg.variant == "yoked_ref" and phi is not None and "ref_neuron_margin" not in inputs
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            if live_mref:
                raise RuntimeError(
                    "variant yoked_ref with precomputed reference log-probs: the batch carries no "
                    "ref_neuron_margin (the reference pass ran without the NeuronSet)"
                )
        else:
            ref_window = self.ref_capture.window("ref") if live_mref else contextlib.nullcontext()
            ref_model = self.ref_model if self.ref_model is not None else self.model
            with ref_window, self.shared_prompt(inputs, ref_model, [self.ref_capture] if live_mref else []):
                ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref_model, inputs)
        chosen_lr = chosen_logps - ref_chosen_logps
        rejected_lr = rejected_logps - ref_rejected_logps

        # ---- neuron margin (SPEC section 3); m_ref from the reference forward's own window or the batch
        # (with LoRA the reference is the same module, so policy and reference share one capture)
        m = m_ref = m_n = None
        if phi is not None:
            phi_w, phi_l, m = neuron_margin(phi)
            if cfg.variant == "yoked_ref":
                if live_mref:
                    _, _, m_ref = neuron_margin(self.ref_capture.phi("ref", completion_mask).detach())
                    self.ref_capture.clear()
                else:
                    m_ref = inputs["ref_neuron_margin"].to(m.device, m.dtype)
            m_n = self._normalise_margin(m, m_ref)
            self._metric(mode, "neuron/chosen", phi_w)
            self._metric(mode, "neuron/rejected", phi_l)
            self._metric(mode, "neuron/margin", m)
            self._metric(mode, "neuron/accuracy", (m > 0).float())
            if cfg.variant == "yoked_ref":
                self._metric(mode, "neuron/margin_vs_ref", m - m_ref)
            if m_n is not m:
                self._metric(mode, "neuron/margin_norm", m_n)
        gamma = self.gamma_eff
        neuron = gamma * m_n if m_n is not None and gamma != 0 and cfg.variant in ("yoked", "yoked_ref") else None

        chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
        sft = None
        if "sft" in self.loss_types:
            if per_token_logps is None:
                per_token_logps = self._sft_token_logps(model, inputs)
            c_tok, _ = per_token_logps.chunk(2, dim=0)
            c_m, _ = shift_mask.chunk(2, dim=0)
            sft = -c_tok[c_m.bool()].mean()
        loss_kw = dict(
            label_smoothing=self.label_smoothing,
            chosen_len=chosen_mask.sum(1),
            rejected_len=rejected_mask.sum(1),
            discopop_tau=getattr(self.args, "discopop_tau", 0.05),
            sft_loss=sft,
        )
        loss = combined_loss(
            self.loss_types, self.loss_weights, chosen_lr, rejected_lr, self.beta, neuron=neuron, **loss_kw
        )
        if sft is not None and len(self.loss_types) > 1:
            self._metric(mode, "loss/sft", sft.detach())
        aux = None
        if m_n is not None and gamma != 0 and cfg.variant == "aux":
            aux = aux_neuron_loss(m_n, gamma).mean()
            loss = loss + cfg.lam * aux
            self._metric(mode, "neuron/aux_loss", aux)
        self._yfpo_loss_path_calls = getattr(self, "_yfpo_loss_path_calls", 0) + 1  # tests: yfpo's own path ran

        if m_n is not None and gamma != 0:
            logit = self.beta * _normalised_delta(
                preference_type(self.loss_types), chosen_lr, rejected_lr, chosen_mask, rejected_mask
            )
            n_abs = (gamma * m_n).abs()
            self._metric(mode, "neuron/gamma_eff", torch.tensor(gamma))
            self._metric(mode, "neuron/logit_share", (n_abs / (logit.abs() + n_abs).clamp(min=1e-12)).detach())
            if mode == "train" and self._grad_share_now(model):
                self._log_grad_share(model, chosen_lr, rejected_lr, neuron, aux, loss_kw)

        # ---- TRL's core metrics (same names)
        chosen_rewards = self.beta * chosen_lr.detach()
        rejected_rewards = self.beta * rejected_lr.detach()
        self._metric(mode, "rewards/chosen", chosen_rewards)
        self._metric(mode, "rewards/rejected", rejected_rewards)
        self._metric(mode, "rewards/accuracies", (chosen_rewards > rejected_rewards).float())
        self._metric(mode, "rewards/margins", chosen_rewards - rejected_rewards)
        self._metric(mode, "logps/chosen", chosen_logps)
        self._metric(mode, "logps/rejected", rejected_logps)
        if neuron is not None:
            self._metric(mode, "rewards/total_margins", (self.beta * (chosen_lr - rejected_lr) + neuron).detach())
        return loss

    def _sft_token_logps(self, model, inputs):
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        return model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs[:, -(completion_mask.size(1) - 1) :]

    def _grad_share_now(self, model) -> bool:
        c = self.ycfg
        on = c.grad_share if c.grad_share is not None else c.lora
        if not on or not torch.is_grad_enabled() or self.accelerator.num_processes > 1:
            return False
        return self.state.global_step % c.grad_share_steps == 0  # validated >= 1 by TrainConfig

    def _log_grad_share(self, model, chosen_lr, rejected_lr, neuron, aux, loss_kw) -> None:
        """neuron/grad_share = ||g_neuron|| / (||g_pref|| + ||g_neuron||): the loss gradient split by the chain rule
        into the part through the log-ratios (neuron term held fixed) and the part through the neuron margin."""
        params = [p for p in model.parameters() if p.requires_grad]
        # g_pref: every loss term but the neuron path (an sft term included); g_neur: through the neuron margin only
        lts, lws = self.loss_types, self.loss_weights
        if aux is not None:
            g_pref = combined_loss(lts, lws, chosen_lr, rejected_lr, self.beta, **loss_kw)
            g_neur = self.ycfg.lam * aux
        else:
            g_pref = combined_loss(lts, lws, chosen_lr, rejected_lr, self.beta, neuron=neuron.detach(), **loss_kw)
            fixed = {**loss_kw, "sft_loss": None if loss_kw.get("sft_loss") is None else loss_kw["sft_loss"].detach()}
            g_neur = combined_loss(
                lts, lws, chosen_lr.detach(), rejected_lr.detach(), self.beta, neuron=neuron, **fixed
            )
        gp = _norm(torch.autograd.grad(g_pref, params, retain_graph=True, allow_unused=True))
        gn = _norm(torch.autograd.grad(g_neur, params, retain_graph=True, allow_unused=True))
        self._metric("train", "neuron/grad_share", torch.tensor(gn / max(gp + gn, 1e-30)))


_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "ref_neuron_margin"}


def _norm(grads) -> float:
    return float(torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads if g is not None)))


def _normalised_delta(loss_type, chosen_lr, rejected_lr, chosen_mask, rejected_mask):
    """The log-ratio margin a loss type reads (per token for ipo / sigmoid_norm)."""
    if loss_type in ("ipo", "sigmoid_norm"):
        return chosen_lr / chosen_mask.sum(1).clamp(min=1) - rejected_lr / rejected_mask.sum(1).clamp(min=1)
    return chosen_lr - rejected_lr


class _KeepRefMargin:
    """TRL's preference collator + the per-pair reference neuron margin column (when the dataset has one)."""

    def __init__(self, inner):
        self.inner = inner.inner if isinstance(inner, _KeepRefMargin) else inner

    def __call__(self, examples):
        out = self.inner(examples)
        if examples and "ref_neuron_margin" in examples[0]:
            out["ref_neuron_margin"] = torch.tensor([float(e["ref_neuron_margin"]) for e in examples])
        return out

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class MetricsJsonl(TrainerCallback):
    """Append every log row to metrics.jsonl (flushed), so a killed run keeps its curves."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        from yfpo.utils import append_jsonl

        append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}])


class StopAfter(TrainerCallback):
    """Stop training after `n` optimizer steps (used by tests to simulate a kill)."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.n:
            control.should_training_stop = True
            control.should_save = True
        return control


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.exists():
        return None
    cks = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1])) if cks else None


def build_dataset(cfg: TrainConfig, tokenizer, path: str | None = None, limit: int | None = -1):
    """pairs (any source of yfpo.data.pair_sources) -> datasets.Dataset of TRL rows (prompt, chosen, rejected);
    returns (dataset, is_step). An explicit plain-string prompt is the raw question: it gets the chat template as a
    user turn here; conversational rows are templated by TRL from their messages; an implicit plain-text prompt is
    kept as it was. path/limit default to cfg.pairs / cfg.limit_pairs (the held-out slice: cfg.eval_pairs, no limit)."""
    from datasets import Dataset

    from yfpo.data.pair_sources import read_pairs

    path = path or cfg.pairs
    if not path:
        raise ValueError("TrainConfig.pairs is empty: pass --pairs PATH (a pairs file, datasets folder or hub id)")
    pairs, fmt = read_pairs(path, limit=cfg.limit_pairs if limit == -1 else limit)
    step = fmt == "step" if cfg.step_dpo is None else cfg.step_dpo
    if step and fmt != "step":
        raise ValueError(f"{path}: step_dpo is on but the pairs have no 'initial_reason_steps' (Step-DPO format)")
    rows = []
    for p in pairs:
        prompt = p["prompt"]
        if isinstance(prompt, str) and not p.get("implicit_prompt"):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        if step:
            prompt = prompt + p["initial_reason_steps"]
        rows.append({"prompt": prompt, "chosen": p["chosen"], "rejected": p["rejected"]})
    return Dataset.from_list(rows), step


def make_trainer(
    cfg: TrainConfig,
    model=None,
    tokenizer=None,
    callbacks=None,
    out: Path | None = None,
    allow_other_weights: bool = False,
):
    """Everything `train` does before `.train()`: returns (trainer, run_dir)."""
    from yfpo.models import load_model
    from yfpo.neurons.neuronset import NeuronSet

    cfg.validate()
    if cfg.use_cpu is False and not torch.cuda.is_available():
        raise ValueError("device cuda (use_cpu false): this machine has no CUDA device; use device auto or cpu")
    out = Path(out or cfg.output_dir)
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.load_device)
    dataset, step = build_dataset(cfg, tokenizer)
    eval_dataset = None
    if cfg.eval_pairs:
        eval_dataset, _ = build_dataset(
            dataclasses.replace(cfg, step_dpo=step), tokenizer, path=cfg.eval_pairs, limit=None
        )
    ref_identity = None
    if cfg.ref_logps:
        from trl.trainer.utils import hash_module

        ref_identity = hash_module(model)  # the reference = the model as loaded (before adapters / training)
    neuron_set = NeuronSet.load(cfg.neurons, model, allow_other_weights=allow_other_weights) if cfg.neurons else None
    peft_config = None
    ref_model = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            task_type="CAUSAL_LM",
        )
    elif not (cfg.precompute_ref_log_probs or cfg.ref_logps):
        ref_model = copy.deepcopy(model).eval()  # TRL would otherwise reload the policy by name
        for p in ref_model.parameters():
            p.requires_grad_(False)
    eval_steps = cfg.eval_steps
    if eval_dataset is not None and eval_steps is None:
        eval_steps = cfg.save_steps  # yfpo's default: evaluate where it saves
    ckpt = cfg.activation_checkpointing
    args = dataclasses.replace(  # the config is TRL's args; the checkpoints go below the run directory
        cfg,
        output_dir=str(out / "checkpoints"),
        precompute_ref_log_probs=bool(cfg.precompute_ref_log_probs or cfg.ref_logps),
        eval_steps=eval_steps,
        data_seed=cfg.seed if cfg.data_seed is None else cfg.data_seed,
        activation_checkpointing_kwargs=(
            {"use_reentrant": False}
            if ckpt and cfg.activation_checkpointing_kwargs is None
            else cfg.activation_checkpointing_kwargs
        ),
        gradient_checkpointing_kwargs=None,
    )
    trainer = YFPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsJsonl(out / "metrics.jsonl"), *(callbacks or [])],
        neuron_set=neuron_set,
        step_dpo=step,
        run_dir=out,
        ref_identity=ref_identity,
    )
    _trackers_into(trainer, out)
    return trainer, out


def _trackers_into(trainer, out: Path) -> None:
    """Experiment trackers (report_to) write below the run directory unless told otherwise: TensorBoard's event
    files to OUT/tensorboard (not ./runs or the checkpoints folder), wandb's run folder to OUT/wandb."""
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:  # TENSORBOARD_LOGGING_DIR wins
            cb.logging_dir = str(out / "tensorboard")
    if "wandb" in (trainer.args.report_to or []):
        if os.environ.get("WANDB_DIR") in (None, _WANDB_DIR_SET[0]):  # the user's own setting wins
            os.environ["WANDB_DIR"] = _WANDB_DIR_SET[0] = str(out)
        os.environ.setdefault("WANDB_PROJECT", "yfpo")


_WANDB_DIR_SET: list[str | None] = [None]  # the WANDB_DIR this process set last (a later run moves it)


DONE = "train_done.json"  # not done.json: that name is the pipeline's stage record in the same folder
# keys that change no weight: where and how often the run logs and saves, and in which form it keeps them
_NOT_RESULT = frozenset({"logging_steps", "save_steps", "save_total_limit", "merge_final", "keep_checkpoints"})


def prune_checkpoints(out: Path, cfg) -> None:
    """A finished run needs no checkpoint (each is the weights plus the optimizer state: 3x the model for full
    fine-tuning with Adam); they are deleted unless cfg.keep_checkpoints. Called after DONE is written, so a
    process killed while deleting leaves a finished run, whose next call deletes the rest."""
    import shutil

    if not getattr(cfg, "keep_checkpoints", False) and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def run_training(
    cfg,
    stage: str,
    record: dict,
    build: Callable[[Path], tuple[Any, Path]],
    *,
    resume: bool = True,
    overwrite: bool = False,
    ignored=None,
    summary: Callable[[Any], dict] | None = None,
) -> Path:
    """The run-directory lifecycle `yfpo train` and `yfpo grpo` share: strict resume (a folder made by another
    config is refused, unless overwrite empties it), build the trainer (a bad input fails before anything is
    written), claim the folder, config + versions, append-only metrics with a resume marker, train from the last
    checkpoint, a checkpoint when stopped early, final/ (a LoRA run's adapter, merged when cfg.merge_final), DONE
    with the summary, and checkpoints/ deleted (unless cfg.keep_checkpoints). `record` is the config as identities (model/pairs/neurons by content); `build(out)` returns
    (trainer, out)."""
    from yfpo import resume as strict
    from yfpo.config import save_config
    from yfpo.utils import append_jsonl, atomic_write_json, read_jsonl_resume, seed_everything, versions

    out = Path(cfg.output_dir)
    ignored = strict.IGNORED | _NOT_RESULT if ignored is None else ignored
    if not overwrite:
        strict.check(out, stage, record, ignored=ignored)
        if (out / DONE).exists():
            prune_checkpoints(out, cfg)
            return out
    seed_everything(cfg.seed)
    trainer, out = build(out)
    acc = trainer.accelerator
    main = acc.is_main_process  # under accelerate/DDP only one process writes the run directory's own files
    if main:
        strict.claim(out, stage, record, overwrite=overwrite, ignored=ignored)
    acc.wait_for_everyone()
    last = _last_checkpoint(out / "checkpoints") if resume else None
    if main:
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "versions.json", versions())
        # append-only: a torn last line is cut; a marker says the steps after the checkpoint are replayed
        mpath = out / "metrics.jsonl"
        if read_jsonl_resume(mpath):
            append_jsonl(
                mpath, [{"event": "resume", "step": int(last.name.split("-")[-1]) if last else 0, "time": time.time()}]
            )
    acc.wait_for_everyone()
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.state.global_step < trainer.state.max_steps:  # stopped early (StopAfter / a stopping callback)
        if not (out / "checkpoints" / f"checkpoint-{trainer.state.global_step}").exists():
            trainer._save_checkpoint(trainer.model, None)
        return out
    final = out / "final"
    tok = trainer.processing_class
    if getattr(trainer, "capture", None) is not None:
        trainer.capture.remove()
    merged_lora = bool(cfg.lora and cfg.merge_final)
    if merged_lora:
        if main:
            merged = copy.deepcopy(acc.unwrap_model(trainer.model)).merge_and_unload()
            merged.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # collective where the model is sharded; writes on the main process
    if main:
        tok.save_pretrained(final)
        done = {
            "steps": trainer.state.global_step,
            "train_time_s": round(time.time() - t0, 1),
            "final": str(final),
            "merged": merged_lora,
            **(summary(trainer) if summary else {}),
        }
        atomic_write_json(out / DONE, done)
        prune_checkpoints(out, cfg)
    acc.wait_for_everyone()
    return out


def train(
    cfg: TrainConfig,
    resume: bool = True,
    callbacks=None,
    model=None,
    tokenizer=None,
    overwrite: bool = False,
    allow_other_weights: bool = False,
) -> Path:
    """Run (or resume) one training run; returns the run directory (its final/ loads with load_model).
    A run directory made by another config is refused (yfpo.resume) unless overwrite (which empties it)."""
    from yfpo import resume as strict
    from yfpo.data.pair_sources import source_identity

    cfg.validate()
    record = {
        **cfg.record(),
        "model": strict.model_identity(cfg.model),
        "pairs": source_identity(cfg.pairs),  # a file as resume.file_identity; a folder by its files
        "neurons": strict.file_identity(cfg.neurons),
    }  # by content: a moved run folder still resumes

    def build(out: Path):
        # model, data, NeuronSet: a bad model path or pairs file fails before anything is written
        return make_trainer(
            cfg, model=model, tokenizer=tokenizer, callbacks=callbacks, out=out, allow_other_weights=allow_other_weights
        )

    return run_training(
        cfg,
        "train",
        record,
        build,
        resume=resume,
        overwrite=overwrite,
        summary=lambda t: {
            "pairs_used": len(t.train_dataset),
            "pairs_dropped_prompt_too_long": getattr(t, "dropped_prompt_too_long", 0),
        },
    )
