"""TrainConfig: TRL's `DPOConfig` extended with yfpo's keys (neuron reward, FDT, LoRA, inputs).

Every TRL / transformers option keeps its TRL name (`learning_rate`, `per_device_train_batch_size`, `report_to`,
...) and TRL's help; yfpo's own fields carry `metadata={"help": ..., "group": ...}` like TRL's, and `yfpo train
--help` lists them all by group. The config is the trainer's `args`: `YFPOTrainer` reads yfpo's fields from it.

Older yfpo configs keep working: their short names (`lr`, `batch_size`, `epochs`, `grad_accum`, `lr_scheduler`,
`warmup_ratio`, `precompute_ref`, `num_workers`, `device`) and their `trl: {...}` section are read as the TRL
options they stood for (`ALIASES`, `TrainConfig.config_aliases`). `record()` writes the config in the shape those
configs had, so the stage hash of a run made before the change (yfpo run, config.hash.json) stays the same.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from dataclasses import dataclass, field
from typing import Any

from trl import DPOConfig

NEURON_NORMS = ("raw", "ref_std")
GAMMA_MODES = ("fixed", "grad_ratio")

G_INPUTS = "yfpo: inputs"
G_NEURON = "yfpo: neuron reward (SPEC section 3)"
G_FDT = "yfpo: FDT (SPEC section 4)"
G_MODEL = "yfpo: model and adapters"
G_DEFAULTS = "TRL options whose default yfpo changes"

# older yfpo key -> the TRL / transformers option it stood for
ALIASES = {
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "lr_scheduler": "lr_scheduler_type",
    "precompute_ref": "precompute_ref_log_probs",
    "num_workers": "dataloader_num_workers",
    "gradient_checkpointing": "activation_checkpointing",  # transformers 5 renamed it (the old name warns)
    "warmup_ratio": "warmup_steps",  # transformers 5: warmup_steps < 1 is a ratio of the total steps
    "device": "use_cpu",  # device: cpu -> use_cpu: true; auto -> None (the GPU when there is one); cuda -> false
}
ALIAS_HELP = {
    "warmup_ratio": "a ratio in [0, 1) (the fraction of steps warmed up); for N warm-up steps set warmup_steps: N",
    "device": "cpu | auto (auto: the GPU when there is one)",
}
# TRL options yfpo must set itself, with the reason given to whoever sets them
CONTROLLED = {
    "model_init_kwargs": "yfpo loads the model itself: set `model` and `dtype`",
    "resume_from_checkpoint": "yfpo resumes from OUT/checkpoints itself: rerun the same command (--no-resume "
    "starts over)",
    "pad_token": "deprecated in TRL; the model's tokenizer decides",
    "trust_remote_code": "yfpo loads the model itself and does not run a model's own code",
}
# options that change what is logged or saved, never the weights: left out of the stage hash
NOT_RESULT = frozenset(
    {
        "report_to",
        "disable_tqdm",
        "logging_dir",
        "run_name",
        "project",
        "trackio_space_id",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "save_strategy",
        "save_only_model",
        "per_device_eval_batch_size",
        "eval_strategy",
        "prediction_loss_only",
        "eval_on_start",
        "include_num_input_tokens_seen",
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
    }
)
# fields yfpo derives from its own keys (dtype -> bf16, device -> use_cpu, ...): not part of the record's `trl`
_DERIVED = frozenset(
    {"bf16", "use_cpu", "gradient_checkpointing", "activation_checkpointing", "data_seed", "do_eval", "eval_steps"}
)
# the keys of TrainConfig before it became a DPOConfig, in their order: record() writes these (stage hashes)
_RECORD_KEYS = (
    "model pairs neurons output_dir name loss_type beta label_smoothing gamma variant lam neuron_norm neuron_center "
    "gamma_mode grad_ratio_rho grad_ratio_batches grad_share grad_share_steps ref_logps eval_pairs eval_steps fdt "
    "step_dpo lora lora_r lora_alpha lora_dropout lora_targets merge_final dtype device lr epochs max_steps "
    "batch_size grad_accum max_length warmup_ratio weight_decay lr_scheduler gradient_checkpointing share_prompt "
    "precompute_ref seed limit_pairs logging_steps save_steps save_total_limit keep_checkpoints num_workers trl"
).split()


def _f(default: Any, help: str, group: str, **kw) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "group": group}, **kw)
    return field(default=default, metadata={"help": help, "group": group}, **kw)


def _help_of(name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(DPOConfig) if f.name == name)


def _changed(name: str, default: Any, why: str) -> Any:
    """A TRL field with yfpo's default: TRL's help plus why yfpo's default differs."""
    return _f(default, f"{_help_of(name)} (yfpo's default: {why})", G_DEFAULTS)


@dataclass
class TrainConfig(DPOConfig):
    """One preference-training run: every trl.DPOConfig option, plus yfpo's (neuron reward, FDT, LoRA, inputs)."""

    # ---- yfpo: inputs
    model: str = _f("default", "hub id, local folder, or 'default' (embedded SmolLM2-135M-Instruct)", G_INPUTS)
    pairs: str = _f(
        "",
        "preference pairs: a JSONL/JSON/Parquet/CSV file, a `datasets.save_to_disk` folder or a hub id "
        "(owner/name[:subset][@split]); TRL's standard or conversational format, or Step-DPO's",
        G_INPUTS,
    )
    neurons: str | None = _f(None, "NeuronSet file (from `yfpo neurons find`); needed when gamma != 0", G_INPUTS)
    name: str = _f("run", "a label for the run (not part of its hash)", G_INPUTS)
    limit_pairs: int | None = _f(None, "train on the first N pairs only", G_INPUTS)
    eval_pairs: str | None = _f(
        None,
        "held-out pairs evaluated with TRL's eval loop every eval_steps (reward accuracy, neuron margin into "
        "metrics); turns eval_strategy to 'steps'",
        G_INPUTS,
    )
    step_dpo: bool | None = _f(None, "Step-DPO data (no EOS on steps); None: from the data", G_INPUTS)
    ref_logps: str | None = _f(
        None, "reference file from `yfpo train precompute-ref` (yfpo.train.reference); no recompute", G_INPUTS
    )

    # ---- yfpo: neuron reward
    gamma: float = _f(0.0, "weight of the neuron margin in the preference logit; 0 = the plain loss", G_NEURON)
    variant: str = _f("yoked", "yoked | yoked_ref | aux: how the neuron margin enters the loss", G_NEURON)
    lam: float = _f(1.0, "lambda of the `aux` variant", G_NEURON)
    neuron_norm: str = _f(
        "ref_std",
        "scale of the neuron margin: raw = SPEC's phi; ref_std = m / std(m_ref), std(m_ref) measured once with "
        "the reference model over the training pairs before step 0 (calibration.json in the run dir)",
        G_NEURON,
    )
    neuron_center: bool = _f(
        False, "subtract mean(m_ref) too (variant yoked/aux): reward moving the margin, not its start", G_NEURON
    )
    gamma_mode: str = _f(
        "fixed",
        "fixed: gamma as given | grad_ratio: gamma = rho * ||grad(beta*delta)|| / ||grad(m)|| at step 0",
        G_NEURON,
    )
    grad_ratio_rho: float = _f(1.0, "rho of gamma_mode grad_ratio", G_NEURON)
    grad_ratio_batches: int = _f(2, "batches averaged for the grad_ratio gamma", G_NEURON)
    grad_share: bool | None = _f(None, "log neuron/grad_share (None: on with LoRA, off for full FT)", G_NEURON)
    grad_share_steps: int = _f(
        8, "log grad_share every this many optimizer steps, from the first (each costs two backward passes)", G_NEURON
    )

    # ---- yfpo: FDT
    fdt: bool = _f(False, "FDT plug-in: the output layer's gradient from the FDT head (full fine-tuning only)", G_FDT)

    # ---- yfpo: model and adapters
    lora: bool = _f(True, "train LoRA adapters (False: full fine-tuning)", G_MODEL)
    lora_r: int = _f(16, "LoRA rank", G_MODEL)
    lora_alpha: int = _f(32, "LoRA alpha", G_MODEL)
    lora_dropout: float = _f(0.0, "LoRA dropout", G_MODEL)
    lora_targets: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "LoRA target modules", G_MODEL
    )
    merge_final: bool = _f(
        False,
        "final/ of a LoRA run: the adapter (a few MB; load_model and every stage load it on its base model) or, with "
        "merge_final, the merged full model (loadable by tools that take only a full folder)",
        G_MODEL,
    )
    keep_checkpoints: bool = _f(
        False, "keep checkpoints/ (weights + optimizer state) once final/ is written (False: deleted)", G_MODEL
    )
    dtype: str = _f("float32", "weights dtype: float32 | bfloat16 | float16 (bfloat16 also sets bf16)", G_MODEL)
    share_prompt: bool = _f(
        True,
        "the policy and reference forwards run each pair's prompt once (chosen and rejected packed behind it); "
        "checked once per training against TRL's two rows, skipped where it cannot be exact",
        G_MODEL,
    )

    # ---- TRL options with yfpo's defaults
    output_dir: str | None = _f("runs/train/run", "the run directory (checkpoints in OUT/checkpoints)", G_DEFAULTS)
    learning_rate: float = _changed("learning_rate", 5e-5, "LoRA on small models")
    num_train_epochs: float = _changed("num_train_epochs", 1.0, "one pass over the pairs")
    per_device_train_batch_size: int = _changed("per_device_train_batch_size", 2, "CPU-sized")
    max_length: int | None = _changed("max_length", 384, "GSM8K-sized")
    warmup_steps: float = _changed("warmup_steps", 0.1, "a tenth of the steps")
    lr_scheduler_type: Any = _changed("lr_scheduler_type", "cosine", "yfpo's recipe")
    logging_steps: float = _changed("logging_steps", 1, "every step into metrics.jsonl")
    save_steps: float = _changed("save_steps", 25, "a killed run resumes from its last checkpoint")
    save_total_limit: int | None = _changed("save_total_limit", 2, "checkpoints are for resuming")
    seed: int = _changed("seed", 0, "yfpo's seeds start at 0")
    report_to: None | str | list[str] = _changed("report_to", "none", "metrics.jsonl is always written")
    prediction_loss_only: bool = _changed("prediction_loss_only", True, "the DPO metrics are logged by the loss")
    bf16: bool | None = _changed("bf16", None, "None: on when dtype is bfloat16")
    disable_tqdm: bool | None = _changed("disable_tqdm", None, "None: off when YFPO_NO_PROGRESS=1")
    per_device_eval_batch_size: int | None = _changed(
        "per_device_eval_batch_size", None, "None: per_device_train_batch_size"
    )
    gradient_checkpointing: bool | None = _changed(
        "gradient_checkpointing", None, "off; transformers 5 calls it activation_checkpointing"
    )
    use_cpu: bool | None = _changed("use_cpu", None, "None: the GPU when there is one, else the CPU")

    def __post_init__(self):
        _defaults()
        if self.report_to is None:  # `report_to: none` reads as None in YAML and on the command line
            self.report_to = "none"
        if self.bf16 is None:
            self.bf16 = self.dtype in ("bfloat16", "bf16")
        if self.disable_tqdm is None and os.environ.get("YFPO_NO_PROGRESS") == "1":
            self.disable_tqdm = True
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if self.eval_steps == 0:  # older configs: 0 = every save_steps
            self.eval_steps = None
        if self.eval_pairs and str(getattr(self.eval_strategy, "value", self.eval_strategy)) == "no":
            self.eval_strategy = "steps"
        import torch

        declared = self.use_cpu
        # transformers checks the precision against this machine: on one without a GPU (planning a GPU config on a
        # laptop, or device auto) it is checked as the CPU run it would be; the declared value is kept (None =
        # auto), because the stage hash reads it, and make_trainer refuses use_cpu false without a GPU
        if declared is None or not torch.cuda.is_available():
            self.use_cpu = not torch.cuda.is_available()
        super().__post_init__()
        self.use_cpu = declared

    # ---------------------------------------------------------------- older configs and the stage hash

    @classmethod
    def config_aliases(cls, data: dict, prefix: str = "") -> dict:
        """A config mapping with older yfpo names (ALIASES) and a `trl:` section rewritten to TRL's names."""
        data = dict(data)
        trl = data.pop("trl", None)
        if trl is not None:
            if not isinstance(trl, dict):
                raise ValueError(f"{prefix}trl: expected a mapping of DPOConfig options, got {trl!r}")
            both = sorted(set(trl) & set(data))
            if both:
                raise ValueError(f"{prefix}trl: {', '.join(both)} also set outside it; keep one")
            data.update(trl)
        for old, new in ALIASES.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"{prefix}{old} and {prefix}{new} are the same option; keep {new}")
            value = data.pop(old)
            if old == "device":
                if not isinstance(value, str) or not (value in ("cpu", "auto") or value.startswith("cuda")):
                    raise ValueError(f"{prefix}device: expected cpu, auto or cuda, got {value!r}")
                value = True if value == "cpu" else None if value == "auto" else False
            elif old == "warmup_ratio":
                try:
                    ok = 0 <= float(value) < 1
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise ValueError(f"{prefix}warmup_ratio: {value!r} is not {ALIAS_HELP['warmup_ratio']}")
            data[new] = value
        refused = [k for k in data if k in CONTROLLED]
        if refused:
            k = refused[0]
            raise ValueError(f"{prefix}{k} is set by yfpo: {CONTROLLED[k]}")
        return data

    @classmethod
    def alias_names(cls) -> list[str]:
        return [*ALIASES, "trl"]

    def record(self) -> dict:
        """The config as TrainConfig's older flat form: yfpo's keys, the older short names, and every other
        option that differs from its default under `trl` (what decides the weights; NOT_RESULT left out).
        The stage hash and the run directory's config.hash.json are computed from it, so a run made before
        TrainConfig became a DPOConfig keeps its hash."""
        out: dict[str, Any] = {}
        for k in _RECORD_KEYS:
            if k == "trl":
                out[k] = self.trl_options()
            elif k == "device":
                out[k] = "auto" if self.use_cpu is None else "cpu" if self.use_cpu else "cuda"
            elif k == "loss_type":
                lt = list(self.loss_type)
                out[k] = lt[0] if len(lt) == 1 else lt
            elif k == "eval_steps":
                out[k] = 0 if self.eval_steps is None else _int_steps(self.eval_steps)
            elif k in ("logging_steps", "save_steps"):
                out[k] = _int_steps(getattr(self, k))
            else:
                out[k] = _plain(getattr(self, ALIASES.get(k, k)))
        return out

    def trl_options(self) -> dict:
        """The TRL options set to something other than TrainConfig's default (the older `trl:` section)."""
        covered = {ALIASES.get(k, k) for k in _RECORD_KEYS} | _DERIVED | NOT_RESULT
        base = _defaults()
        own = {f.name for f in dataclasses.fields(TrainConfig)} - {f.name for f in dataclasses.fields(DPOConfig)}
        out = {}
        for f in dataclasses.fields(self):
            if f.name in covered or f.name in own:
                continue
            v = _plain(getattr(self, f.name))
            if v != base.get(f.name):
                out[f.name] = v
        return out

    def user_dict(self) -> dict:
        """yfpo's keys and every TRL option that differs from its default, under TRL's names: a config file that
        `yfpo train` reads back (the run directory's config.yaml)."""
        base = _defaults()
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
                continue  # transformers' older names, mirrors of activation_checkpointing*
            v = _plain(getattr(self, f.name))
            if f.name == "bf16" and v == (self.dtype in ("bfloat16", "bf16")):
                continue  # follows dtype
            if f.name == "per_device_eval_batch_size" and v == self.per_device_train_batch_size:
                continue
            if f.name in _own_names() or v != base.get(f.name):
                out[f.name] = v
        return out

    @property
    def load_device(self) -> str:
        """Where to load the model: cpu, or auto (the accelerator when there is one)."""
        return "cpu" if self.use_cpu else "auto"

    def loss_types(self) -> list[str]:
        """loss_type as TRL's list (RPO: [sigmoid, sft] with loss_weights; "sigmoid,sft" on a command line)."""
        return list(self.loss_type)

    # ---------------------------------------------------------------- validation

    def validate(self) -> "TrainConfig":
        """Refuse inconsistent settings before any work (or any file) is done; returns self."""
        from yfpo.train.losses import LOSS_TYPES, VARIANTS

        lts = self.loss_types()
        bad = [t for t in lts if t not in LOSS_TYPES] if lts else ["(none)"]
        if bad:
            raise ValueError(f"loss_type {bad[0]!r} is not supported; choose one of {', '.join(LOSS_TYPES)}")
        if len(set(lts)) != len(lts):
            raise ValueError(f"loss_type {lts}: a loss type is listed twice")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} is not supported; choose one of {', '.join(VARIANTS)}")
        if (
            isinstance(self.grad_share_steps, bool)
            or not isinstance(self.grad_share_steps, int)
            or self.grad_share_steps < 1
        ):
            raise ValueError(f"grad_share_steps must be an integer >= 1, got {self.grad_share_steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate (older name: lr) must be > 0, got {self.learning_rate}")
        if self.neuron_norm not in NEURON_NORMS:
            raise ValueError(
                f"neuron_norm {self.neuron_norm!r} is not supported; choose one of {', '.join(NEURON_NORMS)}"
            )
        if self.gamma_mode not in GAMMA_MODES:
            raise ValueError(f"gamma_mode {self.gamma_mode!r} is not supported; choose one of {', '.join(GAMMA_MODES)}")
        if all(t == "sft" for t in self.loss_type) and self.gamma != 0:
            raise ValueError(
                "loss_type sft ignores the preference logit, so gamma != 0 would have no effect: use gamma 0 "
                "or a pairwise loss type"
            )
        if self.gamma != 0 or self.fdt:
            self._check_neuron_path()
        self._check_trackers()
        if self.gamma_mode == "grad_ratio" and not self.grad_ratio_rho > 0:
            raise ValueError(f"grad_ratio_rho must be > 0, got {self.grad_ratio_rho}")
        if self.gamma_mode == "grad_ratio" and self.gamma == 0:
            raise ValueError(
                "gamma_mode grad_ratio needs gamma != 0 (its sign, and a NeuronSet); the value found replaces |gamma|"
            )
        if self.grad_ratio_batches < 1:
            raise ValueError(f"grad_ratio_batches must be >= 1, got {self.grad_ratio_batches}")
        if self.eval_steps is not None and self.eval_steps < 0:
            raise ValueError(f"eval_steps must be >= 0, got {self.eval_steps}")
        if str(getattr(self.eval_strategy, "value", self.eval_strategy)) != "no" and not self.eval_pairs:
            raise ValueError("eval_strategy needs held-out pairs to evaluate: set eval_pairs PATH")
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
                "Use fdt with full fine-tuning (lora: false; a lower learning_rate, e.g. 5e-6)."
            )
        if "robust" in self.loss_type and not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"loss_type robust needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")
        if "exo_pair" in self.loss_type and not 0 < self.label_smoothing < 1:
            raise ValueError(f"loss_type exo_pair needs 0 < label_smoothing < 1, got {self.label_smoothing}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_length is None or self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.dtype not in ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
            raise ValueError(f"dtype {self.dtype!r}: expected float32, bfloat16 or float16")
        return self

    def _check_trackers(self) -> None:
        check_trackers(self.report_to)

    def _check_neuron_path(self) -> None:
        """The neuron reward and FDT replace TRL's loss for the standard reverse-KL reward: options that change
        that reward are refused with them (TRL's own loss would run and ignore gamma / fdt)."""
        what = "the neuron reward (gamma != 0)" if self.gamma != 0 else "fdt"
        if self.ld_alpha is not None:
            raise ValueError(f"ld_alpha is not supported with {what}: it reweights the tokens TRL's loss reads")
        if self.f_divergence_type != "reverse_kl":
            raise ValueError(f"f_divergence_type {self.f_divergence_type!r} is not supported with {what} (reverse_kl)")
        if self.use_weighting:
            raise ValueError(f"use_weighting (WPO) is not supported with {what}")


def check_trackers(report_to: None | str | list[str]) -> None:
    """Every report_to integration is installed (transformers would fail at the first step otherwise); shared with
    GRPORunConfig's `trl.report_to`."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    want = [report_to] if isinstance(report_to, str) else list(report_to or [])
    want = [r for r in want if r not in ("none", "all")]
    have = get_available_reporting_integrations()
    missing = [r for r in want if r not in have]
    if missing:
        raise ValueError(
            f"report_to {missing[0]}: its package is not installed (pip install {missing[0]}); "
            f"installed trackers: {', '.join(have) or 'none'}"
        )


def _int_steps(v: Any) -> Any:
    """A *_steps value as the older config held it: an int when integral (TRL's fields are floats)."""
    return int(v) if isinstance(v, float) and v.is_integer() and v >= 1 else v


def _plain(v: Any) -> Any:
    """A config value as plain data: enums as their value, dataclasses as mappings."""
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {k: _plain(x) for k, x in dataclasses.asdict(v).items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


_DEFAULTS: dict | None = None


def _defaults() -> dict:
    """TrainConfig's defaults after TRL's __post_init__, as plain data. Computed once, by the first TrainConfig
    made (before its own __post_init__): building a TrainingArguments resets accelerate's state, which must not
    happen later, beside a live trainer."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = {}  # a marker while the default instance is built
        d = TrainConfig()
        _DEFAULTS = {f.name: _plain(getattr(d, f.name)) for f in dataclasses.fields(d)}
    return _DEFAULTS


def _own_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)} - {f.name for f in dataclasses.fields(DPOConfig)}
