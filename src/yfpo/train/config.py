"""TrainConfig: one preference-training run (DPO family + YFPO neuron reward + FDT, full or LoRA)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NEURON_NORMS = ("raw", "ref_std")
GAMMA_MODES = ("fixed", "grad_ratio")
# DPOConfig options the trainer fills from TrainConfig keys (DPOConfig name -> TrainConfig key)
DPO_MAPPED = {
    "output_dir": "output_dir",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "lr_scheduler_type": "lr_scheduler",
    "warmup_steps": "warmup_ratio",
    "weight_decay": "weight_decay",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "seed": "seed",
    "data_seed": "seed",
    "beta": "beta",
    "loss_type": "loss_type",
    "label_smoothing": "label_smoothing",
    "max_length": "max_length",
    "gradient_checkpointing": "gradient_checkpointing",
    "precompute_ref_log_probs": "precompute_ref",
    "use_cpu": "device",
    "bf16": "dtype",
    "dataloader_num_workers": "num_workers",
    "eval_steps": "eval_steps",
    "eval_strategy": "eval_pairs",
}


@dataclass
class TrainConfig:
    model: str = "default"  # hub id, local folder, or 'default' (embedded SmolLM2-135M-Instruct)
    pairs: str = ""  # pairs JSONL (plain or Step-DPO format)
    neurons: str | None = None  # NeuronSet file; needed when gamma != 0
    output_dir: str = "runs/train/run"
    name: str = "run"

    # loss
    # any TRL pairwise loss type: sigmoid, hinge, ipo, robust, exo_pair, nca_pair, ...; or several as TRL takes them,
    # e.g. [sigmoid, sft] (RPO: DPO + NLL of the chosen answer) with `trl: {loss_weights: [1.0, 1.0]}`; the neuron
    # term acts on the preference types only
    loss_type: str | list[str] = "sigmoid"
    beta: float = 0.1
    label_smoothing: float = 0.0
    # YFPO neuron reward (SPEC section 3): gamma = 0 is the plain loss
    gamma: float = 0.0
    variant: str = "yoked"  # yoked | yoked_ref | aux
    lam: float = 1.0  # lambda of the `aux` variant
    # scale of the neuron margin (SPEC section 3 "Scale"): raw = SPEC's phi; ref_std = m / std(m_ref), with std(m_ref)
    # measured once with the reference model over the training pairs before step 0 (calibration.json in the run dir)
    neuron_norm: str = "ref_std"  # raw | ref_std
    neuron_center: bool = False  # subtract mean(m_ref) too (variant yoked/aux): reward moving the margin, not its start
    gamma_mode: str = (
        "fixed"  # fixed: gamma as given | grad_ratio: gamma = rho * ||grad(beta*delta)|| / ||grad(m)|| at step 0
    )
    grad_ratio_rho: float = 1.0
    grad_ratio_batches: int = 2  # batches averaged for the grad_ratio gamma
    grad_share: bool | None = None  # log neuron/grad_share (None: on with LoRA, off for full FT)
    # ... every this many optimizer steps, from the first: each costs two extra backward passes (on every step it
    # made LoRA YFPO trainings ~1.7x slower than DPO: 645-701 s vs 376-398 s in a cpu_result run)
    grad_share_steps: int = 8
    ref_logps: str | None = None  # reference file from `yfpo train precompute-ref` (yfpo.train.reference); no recompute
    # held-out pairs evaluated with TRL's eval loop every eval_steps (reward accuracy, neuron margin into metrics)
    eval_pairs: str | None = None
    eval_steps: int = 0  # 0: every save_steps when eval_pairs is set
    # FDT plug-in (SPEC section 4)
    fdt: bool = False
    # Step-DPO data: None = from the file (initial_reason_steps present)
    step_dpo: bool | None = None

    # model / adapters
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # final/ of a LoRA run: the adapter (a few MB; load_model and every stage load it on its base model) or, with
    # merge_final, the merged full model (loadable by tools that take only a full folder)
    merge_final: bool = False
    dtype: str = "float32"
    device: str = "auto"

    # optimisation
    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 2  # pairs per device step
    grad_accum: int = 1
    max_length: int = 384
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    gradient_checkpointing: bool = False
    # the policy and reference forwards run each pair's prompt once (chosen and rejected packed into one row behind it: the
    # same log-probs and gradients up to float rounding, ~1/4 fewer positions on chat-templated GSM8K pairs);
    # checked once per training against TRL's two rows, and skipped where it cannot be exact (keep_end
    # truncation, attention without 4-D masks). With dropout on, the prompt's dropout mask is shared by the pair.
    share_prompt: bool = True
    precompute_ref: bool = False
    seed: int = 0
    limit_pairs: int | None = None
    logging_steps: int = 1
    save_steps: int = 25
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # False: checkpoints/ (weights + optimizer state) is deleted once final/ is written
    num_workers: int = 0
    # any other trl.DPOConfig / transformers.TrainingArguments option, passed through unchanged, e.g.
    # `trl: {truncation_mode: keep_end, pad_to_multiple_of: 8, padding_free: true}` (CLI: --trl '{truncation_mode: keep_end}').
    # Options this config sets itself under its own name (learning_rate = lr, ...) are refused here: set those keys.
    trl: dict[str, Any] = field(default_factory=dict)

    def loss_types(self) -> list[str]:
        """loss_type as TRL's list ("sigmoid,sft" from a command line is two types)."""
        lt = self.loss_type
        return [t.strip() for t in lt.split(",") if t.strip()] if isinstance(lt, str) else list(lt)

    def validate(self) -> "TrainConfig":
        """Refuse inconsistent settings before any work (or any file) is done; returns self."""
        from yfpo.train.losses import LOSS_TYPES, VARIANTS

        lts = self.loss_types()
        bad = [t for t in lts if t not in LOSS_TYPES] if lts else ["(none)"]
        if bad:
            raise ValueError(f"loss_type {bad[0]!r} is not supported; choose one of {', '.join(LOSS_TYPES)}")
        if len(set(lts)) != len(lts):
            raise ValueError(f"loss_type {lts}: a loss type is listed twice")
        weights = self.trl.get("loss_weights") if isinstance(self.trl, dict) else None
        if weights is not None and (not isinstance(weights, list) or len(weights) != len(lts)):
            raise ValueError(f"trl.loss_weights {weights!r}: expected a list of {len(lts)} numbers, one per loss_type")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} is not supported; choose one of {', '.join(VARIANTS)}")
        if (
            isinstance(self.grad_share_steps, bool)
            or not isinstance(self.grad_share_steps, int)
            or self.grad_share_steps < 1
        ):
            raise ValueError(f"grad_share_steps must be an integer >= 1, got {self.grad_share_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.neuron_norm not in NEURON_NORMS:
            raise ValueError(
                f"neuron_norm {self.neuron_norm!r} is not supported; choose one of {', '.join(NEURON_NORMS)}"
            )
        if self.gamma_mode not in GAMMA_MODES:
            raise ValueError(f"gamma_mode {self.gamma_mode!r} is not supported; choose one of {', '.join(GAMMA_MODES)}")
        if all(t == "sft" for t in lts) and self.gamma != 0:
            raise ValueError(
                "loss_type sft ignores the preference logit, so gamma != 0 would have no effect: use gamma 0 "
                "or a pairwise loss type"
            )
        if self.gamma_mode == "grad_ratio" and not self.grad_ratio_rho > 0:
            raise ValueError(f"grad_ratio_rho must be > 0, got {self.grad_ratio_rho}")
        if self.gamma_mode == "grad_ratio" and self.gamma == 0:
            raise ValueError(
                "gamma_mode grad_ratio needs gamma != 0 (its sign, and a NeuronSet); the value found replaces |gamma|"
            )
        if self.grad_ratio_batches < 1:
            raise ValueError(f"grad_ratio_batches must be >= 1, got {self.grad_ratio_batches}")
        if self.eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0, got {self.eval_steps}")
        self._check_trl_options()
        if self.gamma != 0 and not self.neurons:
            raise ValueError(
                "gamma != 0 needs a NeuronSet: pass --neurons PATH (from `yfpo neurons find`), or --gamma 0"
            )
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.fdt and self.lora:
            raise ValueError(
                "fdt: true with lora: true would train exactly like fdt: false: FDT changes only the "
                "gradient of the output layer (SPEC section 4), and LoRA keeps the output layer frozen. "
                "Use fdt with full fine-tuning (lora: false; a lower lr, e.g. 5e-6)."
            )
        if "robust" in lts and not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"loss_type robust needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")
        if "exo_pair" in lts and not 0 < self.label_smoothing < 1:
            raise ValueError(f"loss_type exo_pair needs 0 < label_smoothing < 1, got {self.label_smoothing}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_length < 2:
            raise ValueError("batch_size and grad_accum must be >= 1 and max_length >= 2")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ValueError("set max_steps > 0 or epochs > 0")
        if self.dtype not in ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
            raise ValueError(f"dtype {self.dtype!r}: expected float32, bfloat16 or float16")
        return self

    def _check_trl_options(self) -> None:
        import dataclasses

        from trl import DPOConfig

        if not isinstance(self.trl, dict):
            raise ValueError(f"trl: expected a mapping of DPOConfig options, got {self.trl!r}")
        known = {f.name for f in dataclasses.fields(DPOConfig)}
        bad = [k for k in self.trl if k not in known]
        if bad:
            raise ValueError(f"trl: unknown DPOConfig option(s) {', '.join(map(str, bad))} (see trl.DPOConfig)")
        mapped = [f"{k} (use {DPO_MAPPED[k]})" for k in self.trl if k in DPO_MAPPED]
        if mapped:
            raise ValueError(f"trl: {', '.join(mapped)} is set from this config's own key")
