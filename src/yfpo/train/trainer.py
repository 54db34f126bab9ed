"""Preference training on TRL's DPOTrainer, with the YFPO neuron reward and the FDT plug-in.

`YFPOTrainer` subclasses trl.DPOTrainer (trl 1.16); its args are a `TrainConfig` (trl.DPOConfig + yfpo's keys). It
overrides TRL's hooks only: `_compute_loss` (the loss of one stacked [chosen; rejected] batch, as its steps: policy
forward once, reference, neuron term, loss, metrics), `_prepare_dataset` (Step-DPO: no end-of-sequence token on
steps) and the reference precompute (one pass that also records m_ref, or a reference file). Everything else —
tokenization, collation, reference handling, gradient checkpointing, checkpoints and resume, accelerate/DDP — is
TRL's and transformers'. Beside it: calibration.py (the neuron margin's scale, SPEC section 3 "Scale"),
share_prompt.py (each pair's prompt run once), diagnostics.py (neuron/logit_share, neuron/grad_share),
reference.py (the reference pass and file), run_dir.py (the run directory `train(cfg)` fills: config, metrics,
checkpoints, final/, train_done.json).
Logged: TRL's rewards/* and logps/*, neuron/chosen, rejected, margin, accuracy (+ margin_norm, margin_vs_ref,
aux_loss), neuron/gamma_eff, neuron/logit_share each step and neuron/grad_share every grad_share_steps steps
(grad_share: None = on with LoRA, off for full fine-tuning; off under DDP).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from trl import DPOTrainer

from yfpo.models import arch
from yfpo.neurons.capture import NeuronCapture, neuron_margin
from yfpo.train import calibration, diagnostics
from yfpo.train.config import TrainConfig
from yfpo.train.fdt import add_fdt_head, check_fdt_supported
from yfpo.train.losses import aux_neuron_loss, combined_loss
from yfpo.train.reference import reference_for
from yfpo.train.run_dir import MetricsJsonl, run_training, trackers_into
from yfpo.train.share_prompt import PromptSharing


class PolicyForward(NamedTuple):
    """One policy forward on a stacked [chosen; rejected] batch."""

    logps: torch.Tensor  # (2B,) summed completion log-probs
    token_logps: torch.Tensor  # (2B, L-1) per completion position (masked positions included)
    phi: torch.Tensor | None  # (2B,) SPEC's phi, when there is a NeuronSet


class YFPOTrainer(DPOTrainer):
    """DPOTrainer + neuron reward (gamma, variant, lam) + FDT; `args` is a TrainConfig (trl.DPOConfig + yfpo's keys).

    It keeps TRL's hooks and delegates: the calibration of the neuron margin (train/calibration.py), prompt sharing
    (train/share_prompt.py), the neuron-share diagnostics (train/diagnostics.py), the reference pass or file
    (train/reference.py); the run directory is train/run_dir.py's. With gamma=0 and fdt=False it trains as TRL does
    (exactly with share_prompt off; with it on, each pair's prompt runs once and results agree up to float rounding).
    """

    def __init__(self, *args, neuron_set=None, step_dpo: bool = False, run_dir=None, ref_identity=None, **kwargs):
        cfg = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"YFPOTrainer needs args=TrainConfig(...) (a trl.DPOConfig with yfpo's keys), got {cfg!r}")
        cfg.validate()
        if cfg.gamma != 0 and neuron_set is None:
            raise ValueError("gamma != 0 needs a NeuronSet (--neurons PATH from `yfpo neurons find`)")
        self.step_dpo = step_dpo
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.ref_identity = ref_identity
        self.neuron_set = neuron_set
        self.calibration: dict | None = None
        self.gamma_eff = float(cfg.gamma)
        self.sharing = PromptSharing(cfg.share_prompt)
        super().__init__(*args, **kwargs)  # TRL's precompute (if on) is deferred to _precompute_ref_logps below
        gc_kwargs = self.args.gradient_checkpointing_kwargs or {}
        if cfg.gamma != 0 and self.args.gradient_checkpointing and gc_kwargs.get("use_reentrant", False):
            raise ValueError(
                "the neuron reward needs non-reentrant gradient checkpointing (use_reentrant=False): "
                "reentrant checkpointing runs the forward without autograd and would cut the margin's gradient"
            )
        if cfg.fdt:
            check_fdt_supported(self.model)
            add_fdt_head(arch.unwrap(self.model))  # TRL added its fused head first; this wraps it
        self.capture = NeuronCapture(self.model, neuron_set) if neuron_set is not None else None
        self.ref_capture = None
        if neuron_set is not None:  # with LoRA the reference is the same module: one capture, two windows
            self.ref_capture = NeuronCapture(self.ref_model, neuron_set) if self.ref_model is not None else self.capture
        self.data_collator = _KeepRefMargin(self.data_collator)
        train_reference = None
        if self.precompute_ref_logps:  # TRL's precompute pass, run here once the neuron hooks exist (m_ref rides on it)
            bs = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            self.train_dataset, train_reference = self._with_reference(self.train_dataset, "train", bs)
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {k: self._with_reference(v, k, bs)[0] for k, v in self.eval_dataset.items()}
            elif self.eval_dataset is not None:
                self.eval_dataset = self._with_reference(self.eval_dataset, "eval", bs)[0]
        if neuron_set is not None and cfg.gamma != 0 and calibration.needed(cfg):
            self.calibration = calibration.calibrate(self, train_reference)
            self.gamma_eff = float(self.calibration["gamma_eff"])

    @property
    def ycfg(self) -> TrainConfig:
        """The run's TrainConfig (TRL's args with yfpo's keys)."""
        return self.args

    @property
    def share_prompt_batches(self) -> int:
        return self.sharing.batches

    def shared_prompt(self, inputs, model=None, captures=()):
        """Around a forward of `model` (default: the policy) on a DPO batch: each pair's prompt once (share_prompt)."""
        return self.sharing.around(inputs, self.model if model is None else model, captures)

    # ---------------------------------------------------------------- TRL's hooks

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """TRL's, counting the pairs it drops (prompt alone >= max_length); Step-DPO: no EOS after a step."""
        n_in = len(dataset)
        ds = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        self.dropped_prompt_too_long = n_in - len(ds)
        if self.dropped_prompt_too_long:
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

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "ref_neuron_margin" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "ref_neuron_margin"]

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's precompute, deferred from DPOTrainer.__init__ to ours (the neuron hooks must exist first)."""
        if not hasattr(self, "capture"):
            return dataset
        return self._with_reference(dataset, name, batch_size)[0]

    def _compute_loss(self, model, inputs, return_outputs):
        """The loss of one stacked [chosen; rejected] batch, step by step."""
        if self._trl_loss(return_outputs):
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        cfg = self.ycfg
        live_mref = cfg.variant == "yoked_ref" and self.capture is not None and "ref_neuron_margin" not in inputs
        policy = self.policy_forward(model, inputs)
        ref_chosen, ref_rejected = self._reference_logps(inputs, live_mref)
        chosen_logps, rejected_logps = policy.logps.chunk(2, dim=0)
        chosen_lr, rejected_lr = chosen_logps - ref_chosen, rejected_logps - ref_rejected
        m_n = self._neuron_margin(mode, policy.phi, inputs, live_mref)
        loss, terms = self._loss(mode, policy, m_n, chosen_lr, rejected_lr, inputs["completion_mask"])
        if m_n is not None and self.gamma_eff != 0:
            self._log_neuron_share(mode, model, m_n, chosen_lr, rejected_lr, inputs["completion_mask"], terms)
        self._log_rewards(mode, chosen_logps, rejected_logps, chosen_lr, rejected_lr, terms["neuron"])
        return loss

    # ---------------------------------------------------------------- the loss, step by step

    def _trl_loss(self, return_outputs: bool) -> bool:
        """Settings whose loss is TRL's own (refused with gamma / fdt by TrainConfig.validate)."""
        return bool(
            return_outputs
            or self.ld_alpha is not None
            or self.f_divergence_type != "reverse_kl"
            or self.use_weighting
            or self.aux_loss_enabled
        )

    def policy_forward(self, model, inputs, fdt: bool | None = None) -> PolicyForward:
        """The policy forward (the only one whose activations are captured); through the FDT head with fdt.
        Through the (possibly DDP-wrapped) model, so gradient sync still happens."""
        fdt = self.ycfg.fdt if fdt is None else fdt
        completion_mask = inputs["completion_mask"]
        seq_len = completion_mask.size(1) - 1
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        head = {"fdt_labels": labels} if fdt else {"labels": labels, "fused_lm_head": True}
        cap = self.capture
        with (
            cap.window("policy") if cap is not None else contextlib.nullcontext(),
            self.shared_prompt(inputs, model, [cap]),
        ):
            outputs = model(**model_kwargs, use_cache=False, **head)
        if fdt:
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["fdt/aligned_tokens"].append(float(outputs.aligned_tokens))
            self._metrics[mode]["fdt/hidden_diff_norm"].append(float(outputs.hidden_diff_norm))
        token_logps = outputs.log_probs[:, -seq_len:]
        phi = None
        if cap is not None:  # read (and released) before the reference forward
            phi = cap.phi("policy", completion_mask)
            cap.clear()
        return PolicyForward((token_logps * completion_mask[:, 1:]).sum(dim=1), token_logps, phi)

    def _reference_logps(self, inputs, live_mref: bool):
        """Reference log-probs: precomputed (TRL's pass or a reference file), a reference copy, or adapters disabled
        (TRL's routine); with live_mref the reference forward also records the reference activations. Like TRL, the
        reference runs on the unwrapped module, not the DDP wrapper."""
        if self.precompute_ref_logps:
            if live_mref:
                raise RuntimeError(
                    "variant yoked_ref with precomputed reference log-probs: the batch carries no "
                    "ref_neuron_margin (the reference pass ran without the NeuronSet)"
                )
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        ref_model = self.ref_model if self.ref_model is not None else self.model
        window = self.ref_capture.window("ref") if live_mref else contextlib.nullcontext()
        with window, self.shared_prompt(inputs, ref_model, [self.ref_capture] if live_mref else []):
            return self.compute_ref_log_probs(ref_model, inputs)

    def live_reference_margin(self, inputs) -> torch.Tensor:
        """m_ref of a batch from a reference forward's own activations (yoked_ref without a reference file)."""
        with self.ref_capture.window("ref"):
            self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)
        return self._take_reference_margin(inputs["completion_mask"])

    def _take_reference_margin(self, completion_mask) -> torch.Tensor:
        _, _, m_ref = neuron_margin(self.ref_capture.phi("ref", completion_mask).detach())
        self.ref_capture.clear()
        return m_ref

    def _neuron_margin(self, mode: str, phi, inputs, live_mref: bool) -> torch.Tensor | None:
        """The neuron margin m (SPEC section 3) normalised as the loss reads it (train/calibration.py); m_ref from
        the reference forward's own window or the batch (with LoRA policy and reference share one capture)."""
        if phi is None:
            return None
        cfg = self.ycfg
        phi_w, phi_l, m = neuron_margin(phi)
        m_ref = None
        if cfg.variant == "yoked_ref":
            if live_mref:
                m_ref = self._take_reference_margin(inputs["completion_mask"])
            else:
                m_ref = inputs["ref_neuron_margin"].to(m.device, m.dtype)
        m_n = calibration.normalise_margin(cfg, self.calibration, m, m_ref)
        self._metric(mode, "neuron/chosen", phi_w)
        self._metric(mode, "neuron/rejected", phi_l)
        self._metric(mode, "neuron/margin", m)
        self._metric(mode, "neuron/accuracy", (m > 0).float())
        if cfg.variant == "yoked_ref":
            self._metric(mode, "neuron/margin_vs_ref", m - m_ref)
        if m_n is not m:
            self._metric(mode, "neuron/margin_norm", m_n)
        return m_n

    def _loss(self, mode, policy: PolicyForward, m_n, chosen_lr, rejected_lr, completion_mask):
        """TRL's loss types with their weights (losses.combined_loss; the sft term from the same policy forward),
        the neuron term inside the preference logit (yoked, yoked_ref) or beside it (aux). Returns (loss, terms)."""
        cfg, gamma = self.ycfg, self.gamma_eff
        on = m_n is not None and gamma != 0
        neuron = gamma * m_n if on and cfg.variant in ("yoked", "yoked_ref") else None
        chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
        sft = None
        if "sft" in self.loss_types:
            c_tok, _ = policy.token_logps.chunk(2, dim=0)
            sft = -c_tok[chosen_mask[:, 1:].bool()].mean()
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
        if on and cfg.variant == "aux":
            aux = aux_neuron_loss(m_n, gamma).mean()
            loss = loss + cfg.lam * aux
            self._metric(mode, "neuron/aux_loss", aux)
        return loss, {"neuron": neuron, "aux": aux, "loss_kw": loss_kw}

    # ---------------------------------------------------------------- metrics

    def _metric(self, mode: str, key: str, value: torch.Tensor) -> None:
        self._metrics[mode][key].append(
            self.accelerator.gather_for_metrics(value.detach().float().reshape(-1)).mean().item()
        )

    def _log_neuron_share(self, mode, model, m_n, chosen_lr, rejected_lr, completion_mask, terms) -> None:
        gamma = self.gamma_eff
        chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
        self._metric(mode, "neuron/gamma_eff", torch.tensor(gamma))
        share = diagnostics.logit_share(
            self.loss_types, self.beta, (gamma * m_n).abs(), chosen_lr, rejected_lr, chosen_mask, rejected_mask
        )
        self._metric(mode, "neuron/logit_share", share)
        if mode == "train" and diagnostics.grad_share_due(
            self.ycfg, self.state.global_step, self.accelerator.num_processes
        ):
            g = diagnostics.grad_share(
                model,
                self.loss_types,
                self.loss_weights,
                self.beta,
                self.ycfg.lam,
                chosen_lr,
                rejected_lr,
                terms["neuron"],
                terms["aux"],
                terms["loss_kw"],
            )
            self._metric("train", "neuron/grad_share", torch.tensor(g))

    def _log_rewards(self, mode, chosen_logps, rejected_logps, chosen_lr, rejected_lr, neuron) -> None:
        """TRL's core metrics (same names), and the total margin the loss read when the neuron term is in it."""
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

    # ---------------------------------------------------------------- reference columns

    def _with_reference(self, dataset, name: str, batch_size: int):
        """(dataset with the reference columns, the reference result): log-probs and, with a NeuronSet, m_ref."""
        res = reference_for(self, dataset, name, batch_size)
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
        return dataset, res


_NON_MODEL_KEYS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", "ref_neuron_margin"}


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
    trackers_into(trainer, out)
    return trainer, out


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
