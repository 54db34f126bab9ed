"""Preference training on TRL's DPOTrainer, with the YFPO neuron reward and the FDT plug-in.

`YFPOTrainer` subclasses trl.DPOTrainer (trl 1.16) and overrides only `_compute_loss` (the loss of one
stacked [chosen; rejected] batch) and `_prepare_dataset` (Step-DPO: no end-of-sequence token on steps).
Everything else — tokenization, collation, reference handling (a reference copy, LoRA adapters disabled,
or precomputed reference log-probs), gradient checkpointing, checkpoints and resume, accelerate/DDP — is
TRL's and transformers'. `train(cfg)` builds a run directory:

    OUT/config.yaml  versions.json  metrics.jsonl  checkpoints/checkpoint-N/  final/  train_done.json

config.hash.json records the config (yfpo.resume): a rerun with another config is refused, not resumed.
metrics.jsonl is append-only; a resume appends {"event": "resume", "step": N} (read with utils.read_metrics).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer
from transformers import TrainerCallback

from yfpo.models import arch
from yfpo.train.config import TrainConfig
from yfpo.train.fdt import add_fdt_head, check_fdt_supported
from yfpo.train.losses import LOSS_TYPES, VARIANTS, aux_neuron_loss, pairwise_loss, yoke
from yfpo.train.neuron_reward import NeuronCapture, neuron_margin


class YFPOTrainer(DPOTrainer):
    """DPOTrainer + neuron reward (gamma, variant, lam) + FDT. With gamma=0 and fdt=False it trains exactly as TRL."""

    def __init__(self, *args, yfpo: TrainConfig, neuron_set=None, step_dpo: bool = False, **kwargs):
        self.ycfg = yfpo
        self.step_dpo = step_dpo
        if yfpo.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {yfpo.loss_type!r}: supported {', '.join(LOSS_TYPES)}")
        if yfpo.variant not in VARIANTS:
            raise ValueError(f"variant {yfpo.variant!r}: expected one of {', '.join(VARIANTS)}")
        if yfpo.gamma != 0 and neuron_set is None:
            raise ValueError("gamma != 0 needs a NeuronSet (--neurons PATH from `yfpo neurons find`)")
        if yfpo.variant == "yoked_ref" and yfpo.gamma != 0 and yfpo.precompute_ref:
            raise NotImplementedError("variant yoked_ref with precompute_ref: precomputed reference activations are "
                                      "not implemented; use precompute_ref=false")
        super().__init__(*args, **kwargs)
        gc_kwargs = self.args.gradient_checkpointing_kwargs or {}
        if yfpo.gamma != 0 and self.args.gradient_checkpointing and gc_kwargs.get("use_reentrant", False):
            raise ValueError("the neuron reward needs non-reentrant gradient checkpointing (use_reentrant=False): "
                             "reentrant checkpointing runs the forward without autograd and would cut the margin's gradient")
        if yfpo.fdt:
            check_fdt_supported(self.model)
            add_fdt_head(arch.unwrap(self.model))  # TRL added its fused head first; this wraps it
        self.capture = NeuronCapture(self.model, neuron_set) if neuron_set is not None else None
        self.ref_capture = None
        if neuron_set is not None and yfpo.variant == "yoked_ref":
            self.ref_capture = NeuronCapture(self.ref_model, neuron_set) if self.ref_model is not None else self.capture

    # -- Step-DPO: TRL appends EOS to plain-text completions; a step is not the end of the answer
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        n_in = len(dataset)
        ds = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        # TRL drops pairs whose prompt alone fills max_length (their completions would be empty): count them
        self.dropped_prompt_too_long = n_in - len(ds)
        if self.dropped_prompt_too_long:
            import warnings

            warnings.warn(f"{self.dropped_prompt_too_long} of {n_in} {dataset_name} pairs dropped: prompt of >= "
                          f"max_length={args.max_length} tokens leaves no completion token", stacklevel=2)
        if n_in and not len(ds):
            raise ValueError(f"all {n_in} pairs have a prompt of >= max_length={args.max_length} tokens (nothing "
                             "would be learned); raise max_length")
        if getattr(self, "step_dpo", False):
            eos = processing_class.eos_token_id

            def strip(ex):
                for k in ("chosen_ids", "rejected_ids"):
                    if ex[k] and ex[k][-1] == eos:
                        ex[k] = ex[k][:-1]
                return ex

            ds = ds.map(strip, desc="Step-DPO: no EOS on step completions")
        return ds

    def _metric(self, mode: str, key: str, value: torch.Tensor) -> None:
        self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value.detach().float().reshape(-1)).mean().item())

    def _compute_loss(self, model, inputs, return_outputs):
        cfg = self.ycfg
        if return_outputs or self.ld_alpha is not None or self.f_divergence_type != "reverse_kl" or self.use_weighting \
                or len(self.loss_types) != 1 or self.aux_loss_enabled:
            if cfg.gamma or cfg.fdt:
                raise NotImplementedError("the neuron reward / FDT support the standard reverse-KL reward with one loss "
                                          "type (no ld_alpha, no WPO weighting, no MoE router loss)")
            return super()._compute_loss(model, inputs, return_outputs)
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[:, 1:]
        seq_len = shift_mask.size(1)
        model_kwargs = {k: v for k, v in inputs.items() if k not in {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}}
        model_kwargs["use_cache"] = False
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        cap = self.capture
        window = cap.window("policy") if cap is not None else contextlib.nullcontext()

        # ---- policy forward (the only one whose activations are captured)
        with window:
            if cfg.fdt:  # through the (possibly DDP-wrapped) model, so gradient sync still happens
                outputs = model(**model_kwargs, fdt_labels=labels)
                per_token_logps = outputs.log_probs[:, -seq_len:]
                self._metrics[mode]["fdt/aligned_tokens"].append(float(outputs.aligned_tokens))
                self._metrics[mode]["fdt/hidden_diff_norm"].append(float(outputs.hidden_diff_norm))
            else:
                outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
                per_token_logps = outputs.log_probs[:, -seq_len:]
        logps = (per_token_logps * shift_mask).sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)
        phi = None
        if cap is not None:  # read (and released) before the reference forward
            phi = cap.phi("policy", completion_mask)
            cap.clear()

        # ---- reference log-probs: precomputed, a reference copy, or adapters disabled (TRL's own routine).
        # Like TRL, the reference runs on the unwrapped module (self.model / self.ref_model), not the DDP wrapper.
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_window = self.ref_capture.window("ref") if self.ref_capture is not None else contextlib.nullcontext()
            with ref_window:
                ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(
                    self.ref_model if self.ref_model is not None else self.model, inputs)
        chosen_lr = chosen_logps - ref_chosen_logps
        rejected_lr = rejected_logps - ref_rejected_logps

        # ---- neuron margin (SPEC section 3); m_ref from the reference forward's own window
        # (with LoRA the reference is the same module, so policy and reference share one capture)
        m = m_ref = None
        if phi is not None:
            phi_w, phi_l, m = neuron_margin(phi)
            if self.ref_capture is not None and not self.precompute_ref_logps:
                _, _, m_ref = neuron_margin(self.ref_capture.phi("ref", completion_mask).detach())
                self.ref_capture.clear()
            self._metric(mode, "neuron/chosen", phi_w)
            self._metric(mode, "neuron/rejected", phi_l)
            self._metric(mode, "neuron/margin", m)
            self._metric(mode, "neuron/accuracy", (m > 0).float())
        c_eff, r_eff = chosen_lr, rejected_lr
        if m is not None and cfg.gamma != 0 and cfg.variant in ("yoked", "yoked_ref"):
            m_eff = m
            if cfg.variant == "yoked_ref":
                m_eff = m - m_ref
                self._metric(mode, "neuron/margin_vs_ref", m_eff)
            c_eff, r_eff = yoke(chosen_lr, rejected_lr, m_eff, cfg.gamma, self.beta)

        chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
        sft = None
        if self.loss_types[0] == "sft":
            c_tok, _ = per_token_logps.chunk(2, dim=0)
            c_m, _ = shift_mask.chunk(2, dim=0)
            sft = -c_tok[c_m.bool()].mean()
        per_pair = pairwise_loss(self.loss_types[0], c_eff, r_eff, self.beta, label_smoothing=self.label_smoothing,
                                 chosen_len=chosen_mask.sum(1), rejected_len=rejected_mask.sum(1),
                                 discopop_tau=getattr(self.args, "discopop_tau", 0.05), sft_loss=sft)
        loss = per_pair.mean() * self.loss_weights[0]
        if m is not None and cfg.gamma != 0 and cfg.variant == "aux":
            aux = aux_neuron_loss(m, cfg.gamma).mean()
            loss = loss + cfg.lam * aux
            self._metric(mode, "neuron/aux_loss", aux)

        # ---- TRL's core metrics (same names)
        chosen_rewards = self.beta * chosen_lr.detach()
        rejected_rewards = self.beta * rejected_lr.detach()
        self._metric(mode, "rewards/chosen", chosen_rewards)
        self._metric(mode, "rewards/rejected", rejected_rewards)
        self._metric(mode, "rewards/accuracies", (chosen_rewards > rejected_rewards).float())
        self._metric(mode, "rewards/margins", chosen_rewards - rejected_rewards)
        self._metric(mode, "logps/chosen", chosen_logps)
        self._metric(mode, "logps/rejected", rejected_logps)
        if m is not None and cfg.gamma != 0:
            self._metric(mode, "rewards/total_margins", self.beta * (c_eff - r_eff).detach())
        return loss


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


def build_dataset(cfg: TrainConfig, tokenizer):
    """pairs JSONL -> datasets.Dataset of (templated prompt, chosen, rejected); returns (dataset, is_step)."""
    from datasets import Dataset

    from yfpo.data.pairs import load_pairs

    if not cfg.pairs:
        raise ValueError("TrainConfig.pairs is empty: pass --pairs PATH (a pairs JSONL)")
    pairs = load_pairs(cfg.pairs, limit=cfg.limit_pairs)
    step = pairs[0].is_step if cfg.step_dpo is None else cfg.step_dpo
    rows = []
    for p in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False,
                                               add_generation_prompt=True)
        if step:
            if p.initial_reason_steps is None:
                raise ValueError(f"{cfg.pairs}: step_dpo is on but a pair has no 'initial_reason_steps'")
            prompt = prompt + p.initial_reason_steps
        rows.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected})
    return Dataset.from_list(rows), step


def make_trainer(cfg: TrainConfig, model=None, tokenizer=None, callbacks=None, out: Path | None = None,
                 allow_other_weights: bool = False):
    """Everything `train` does before `.train()`: returns (trainer, run_dir)."""
    from yfpo.models import load_model
    from yfpo.neurons.neuronset import NeuronSet

    cfg.validate()
    out = Path(out or cfg.output_dir)
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device="cpu" if cfg.device == "cpu" else "auto")
    dataset, step = build_dataset(cfg, tokenizer)
    neuron_set = NeuronSet.load(cfg.neurons, model, allow_other_weights=allow_other_weights) if cfg.neurons else None
    peft_config = None
    ref_model = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    elif not cfg.precompute_ref:
        ref_model = copy.deepcopy(model).eval()  # TRL would otherwise reload the policy by name
        for p in ref_model.parameters():
            p.requires_grad_(False)
    use_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    args = DPOConfig(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.max_length,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        precompute_ref_log_probs=cfg.precompute_ref,
        report_to=[],
        use_cpu=use_cpu,
        bf16=cfg.dtype in ("bfloat16", "bf16"),
        dataloader_num_workers=cfg.num_workers,
        disable_tqdm=os.environ.get("YFPO_NO_PROGRESS") == "1",
        save_only_model=False,
    )
    trainer = YFPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[MetricsJsonl(out / "metrics.jsonl"), *(callbacks or [])],
                          yfpo=cfg, neuron_set=neuron_set, step_dpo=step)
    return trainer, out


DONE = "train_done.json"  # not done.json: that name is the pipeline's stage record in the same folder
# keys that change no weight: where and how often the run logs and saves
_NOT_RESULT = frozenset({"logging_steps", "save_steps", "save_total_limit"})


def train(cfg: TrainConfig, resume: bool = True, callbacks=None, model=None, tokenizer=None,
          overwrite: bool = False, allow_other_weights: bool = False) -> Path:
    """Run (or resume) one training run; returns the run directory (its final/ loads with load_model).
    A run directory made by another config is refused (yfpo.resume) unless overwrite (which empties it)."""
    from yfpo import resume as strict
    from yfpo.config import save_config, to_dict
    from yfpo.utils import atomic_write_json, append_jsonl, read_jsonl_resume, seed_everything, versions

    cfg.validate()
    out = Path(cfg.output_dir)
    ignored = strict.IGNORED | _NOT_RESULT
    record = {**to_dict(cfg), "model": strict.model_identity(cfg.model), "pairs": strict.file_identity(cfg.pairs),
              "neurons": strict.file_identity(cfg.neurons)}  # by content: a moved run folder still resumes
    if not overwrite:
        strict.check(out, "train", record, ignored=ignored)
        if (out / DONE).exists():
            return out
    seed_everything(cfg.seed)
    # build first (model, data, NeuronSet): a bad model path or pairs file fails before anything is written
    trainer, out = make_trainer(cfg, model=model, tokenizer=tokenizer, callbacks=callbacks, out=out,
                                allow_other_weights=allow_other_weights)
    acc = trainer.accelerator
    main = acc.is_main_process  # under accelerate/DDP only one process writes the run directory's own files
    if main:
        strict.claim(out, "train", record, overwrite=overwrite, ignored=ignored)
    acc.wait_for_everyone()
    last = _last_checkpoint(out / "checkpoints") if resume else None
    if main:
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "versions.json", versions())
        # append-only: a torn last line is cut; a marker says the steps after the checkpoint are replayed
        mpath = out / "metrics.jsonl"
        if read_jsonl_resume(mpath):
            append_jsonl(mpath, [{"event": "resume", "step": int(last.name.split("-")[-1]) if last else 0,
                                  "time": time.time()}])
    acc.wait_for_everyone()
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if trainer.state.global_step < trainer.state.max_steps:  # stopped early (StopAfter / a stopping callback)
        if not (out / "checkpoints" / f"checkpoint-{trainer.state.global_step}").exists():
            trainer._save_checkpoint(trainer.model, None)
        return out
    final = out / "final"
    tok = trainer.processing_class
    if trainer.capture is not None:
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
        summary = {"steps": trainer.state.global_step, "train_time_s": round(time.time() - t0, 1),
                   "final": str(final), "merged": merged_lora, "pairs_used": len(trainer.train_dataset),
                   "pairs_dropped_prompt_too_long": getattr(trainer, "dropped_prompt_too_long", 0)}
        atomic_write_json(out / DONE, summary)
    acc.wait_for_everyone()
    return out
