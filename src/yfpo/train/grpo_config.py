"""GRPORunConfig: one online-RL run (TRL GRPOTrainer + accuracy reward + the neuron signal as reward or loss term).

Flat so `load_config` and `--key value` overrides work; the keys map onto trl.GRPOConfig in
`yfpo.train.grpo.make_grpo_args` (TRL option names kept where they exist). Any other GRPOConfig option goes under
`trl: {...}` by its TRL name and overrides yfpo's default for it (report_to, save_strategy, disable_tqdm, ...),
except the options yfpo sets from its own keys or must control itself (`TRL_FROM_KEYS`, `TRL_CONTROLLED`:
refused by validate() with the reason). `record()` is the config as the stage hash reads it: `trl` only when
set, without the options that change no weight (train.config.NOT_RESULT), so runs made before `trl` existed keep
their hash.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from yfpo.config import _convert
from yfpo.train.config import NOT_RESULT, check_trackers

EXTRACTORS = ("math_verify", "strict", "flexible", "boxed")
NEURON_NORMS = ("ref_std", "raw")
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16's own
METHOD_LOSS_TYPES = ("pacs", "oreal")  # yfpo.train.online: these replace TRL's policy loss
INTRINSICS = ("none", "merci")
MODES = ("questions", "rlpt")
ROLLOUTS = ("engine", "trl")

# trl.GRPOConfig options make_grpo_args sets from a GRPORunConfig key: set that key instead
TRL_FROM_KEYS = {
    "output_dir": "output_dir (checkpoints go to OUTPUT_DIR/checkpoints)",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "lr",
    "max_steps": "max_steps",
    "lr_scheduler_type": "lr_scheduler",
    "warmup_steps": "warmup_ratio",
    "weight_decay": "weight_decay",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "seed": "seed",
    "num_generations": "num_generations",
    "max_completion_length": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "beta": "beta",
    "loss_type": "loss_type",
    "epsilon": "epsilon",
    "num_iterations": "num_iterations",
    "scale_rewards": "scale_rewards",
    "mask_truncated_completions": "mask_truncated_completions",
    "reward_weights": "accuracy_weight / neuron_reward_weight / merci_weight",
    "use_vllm": "use_vllm",
    "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing",
    "gradient_checkpointing_kwargs": "gradient_checkpointing",
    "use_cpu": "device",
    "bf16": "dtype",
}
# trl.GRPOConfig options yfpo must control, with the reason
TRL_CONTROLLED = {
    "model_init_kwargs": "yfpo loads the model itself: set `model` and `dtype`",
    "resume_from_checkpoint": "yfpo resumes from OUT/checkpoints itself: rerun the same command (--no-resume "
    "starts over)",
    "trust_remote_code": "yfpo loads the model itself and does not run a model's own code",
}


_HINTS: dict[str, Any] = {}


def _grpo_hints() -> dict[str, Any]:
    """trl.GRPOConfig's field types (resolved once)."""
    if not _HINTS:
        _HINTS.update(typing.get_type_hints(GRPOConfig))
    return _HINTS


@dataclass
class GRPORunConfig:
    model: str = "default"
    questions: str = "gsm8k_train"  # any benchmark name of yfpo.data.problems (gsm8k_train, mawps_singleop, ...)
    questions_file: str | None = None  # a file in that benchmark's format (or the generic JSONL) instead
    data_dir: str | None = None
    limit_questions: int | None = None
    skip_questions: int = 0  # leave out the first N questions (e.g. an eval slice of the same benchmark)
    shots: int = 0
    neurons: str | None = None  # NeuronSet file (selected, random or flipped control); needed for a neuron weight
    output_dir: str = "runs/grpo/run"
    name: str = "run"

    # rewards
    extractor: str = "math_verify"  # which grader of yfpo.grading decides the accuracy reward
    accuracy_weight: float = 1.0
    neuron_reward_weight: float = 0.0  # (a) phi of each completion, standardised within its group, as a reward
    # (b) differentiable term: lam * mean over (pos, neg) same-group pairs of -log sigmoid(gamma * (phi+ - phi-) / s)
    neuron_loss_weight: float = 0.0
    neuron_gamma: float = 1.0
    neuron_norm: str = "ref_std"  # ref_std: s = std of the pair margins at the first step (frozen); raw: s = 1

    # GRPO (trl.GRPOConfig names)
    loss_type: str = "dapo"  # TRL's grpo | dr_grpo | dapo | bnpo | ..., or pacs | oreal (yfpo.train.online)
    beta: float = 0.0
    num_generations: int = 4
    max_new_tokens: int = 256  # -> max_completion_length
    temperature: float = 1.0
    top_p: float = 1.0
    scale_rewards: str = "group"  # group | batch | none
    mask_truncated_completions: bool = False
    epsilon: float = 0.2
    num_iterations: int = (
        1  # updates per generation batch (TRL's mu); > 1 makes pi_old differ from pi (PACS's psi != 0)
    )
    use_vllm: bool = False
    # rollouts: engine = yfpo.engine.generate (fast-attn on CPU), seeded per generation batch; trl = TRL's
    # model.generate. With use_vllm TRL's vLLM path generates either way.
    rollout: str = "engine"
    rollout_backend: str = "auto"  # the yfpo.engine backend of rollout: engine

    # PACS (yfpo.train.online.pacs): score beta * sum log(pi/pi_old), RLOO or GRPO advantage, weighted BCE
    pacs_beta: float = 1.0
    pacs_adv: str = "rloo"  # rloo | grpo
    pacs_weight: str = "question"  # question (class-balanced within each group) | none
    # OREAL (yfpo.train.online.oreal): BC on positives, reshaped PG on negatives, token weights; KL coefficient = beta
    oreal_pos_factor: float = 1.0
    oreal_neg_factor: float = 0.5
    oreal_pos_mult_adv: bool = True
    oreal_filter: bool = False  # drop groups whose completions are all correct or all wrong
    oreal_token_weights: str = "none"  # none | probe (online-trained substitute token RM) | neuron (NeuronSet margin)
    oreal_threshold: float = 0.5  # threshold_rescale of the token weights
    oreal_probe_lr: float = 1e-3
    # MERCI (yfpo.train.online.merci): count-based intrinsic reward from a Coin Flipping Network trained online
    intrinsic: str = "none"  # none | merci
    merci_weight: float = 0.1  # reward weight of the intrinsic reward beside accuracy_weight
    merci_features: str = "hidden"  # hidden (frozen base model's last hidden state) | neurons (NeuronSet activations)
    merci_aggregate: str = "sum"  # sum over completion tokens (UBE accumulation) | mean
    merci_coins: int = 32
    merci_hidden: int = 128
    merci_lr: float = 1e-3
    merci_updates: int = 4  # CFN minibatch updates per step
    merci_batch: int = 256  # tokens per CFN minibatch
    merci_buffer: int = 20000  # replay buffer of (state, coin flips), tokens
    # RLPT (yfpo.train.online.rlpt): next-segment reasoning on a text corpus, rewarded by a generative judge
    mode: str = "questions"  # questions (benchmark questions, accuracy reward) | rlpt
    rlpt_corpus: str = "gsm8k"  # gsm8k (train solutions) | dolly (Wikipedia contexts) | mix
    rlpt_task: str = "mix"  # asr (next segment) | msr (middle segment) | mix (alternating)
    rlpt_texts: int = 200  # texts drawn from the corpus (seeded)
    rlpt_context: int = 4  # at most this many preceding segments as context
    rlpt_judge: str = "policy"  # policy (the model being trained, no grad) | a model name/path (load_model)
    rlpt_judge_tokens: int = 8  # verdict tokens the judge generates (greedy)

    # model / adapters
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    merge_final: bool = False  # as TrainConfig: final/ holds the LoRA adapter unless asked to merge
    dtype: str = "float32"
    device: str = "auto"

    # optimisation
    lr: float = 1e-5
    max_steps: int = 10
    batch_size: int = 4  # completions per device micro-batch (a multiple of num_generations keeps groups whole)
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 5
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # as TrainConfig

    # any other trl.GRPOConfig option by its TRL name (report_to, save_strategy, disable_tqdm, save_only_model,
    # log_completions, ...): overrides yfpo's default for it
    trl: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def config_aliases(cls, data: dict, prefix: str = "") -> dict:
        """`trl:` values typed as trl.GRPOConfig declares them (a `--trl.max_grad_norm 0.5` override arrives as a
        string); names it does not know are left for validate() to refuse with a suggestion."""
        trl = data.get("trl")
        if isinstance(trl, dict):
            hints = _grpo_hints()
            data = {
                **data,
                "trl": {k: _convert(v, hints[k], f"{prefix}trl.{k}") if k in hints else v for k, v in trl.items()},
            }
        return data

    def record(self) -> dict:
        """The config as the stage hash and config.hash.json read it: `trl` only when it holds an option that can
        change the weights (report_to, save_strategy, ... are left out), so a run made before `trl` existed, or
        one that only adds a tracker, keeps its hash."""
        out = dataclasses.asdict(self)
        trl = {k: v for k, v in out.pop("trl").items() if k not in NOT_RESULT}
        if trl:
            out["trl"] = trl
        return out

    def validate(self) -> "GRPORunConfig":
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"extractor {self.extractor!r}: expected one of {', '.join(EXTRACTORS)}")
        if self.neuron_norm not in NEURON_NORMS:
            raise ValueError(f"neuron_norm {self.neuron_norm!r}: expected one of {', '.join(NEURON_NORMS)}")
        if (self.neuron_reward_weight or self.neuron_loss_weight) and not self.neurons:
            raise ValueError("neuron_reward_weight / neuron_loss_weight != 0 needs a NeuronSet: pass --neurons PATH")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (GRPO compares completions of a group), got {self.num_generations}"
            )
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size, grad_accum and max_new_tokens must be >= 1")
        if self.skip_questions < 0:
            raise ValueError(f"skip_questions must be >= 0, got {self.skip_questions}")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(
                f"batch_size * grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                f"num_generations ({self.num_generations})"
            )
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0, got {self.max_steps}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards {self.scale_rewards!r}: expected group, batch or none")
        self._validate_methods()
        self._validate_trl()
        return self

    def _validate_trl(self) -> None:
        if not isinstance(self.trl, dict):
            raise ValueError(f"trl: expected a mapping of trl.GRPOConfig options, got {self.trl!r}")
        known = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
        for k in self.trl:
            if k in TRL_FROM_KEYS:
                raise ValueError(f"trl.{k} is set by yfpo from its own key: set {TRL_FROM_KEYS[k]} instead")
            if k in TRL_CONTROLLED:
                raise ValueError(f"trl.{k} is set by yfpo: {TRL_CONTROLLED[k]}")
            if k not in known:
                close = difflib.get_close_matches(str(k), sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"trl.{k} is not a trl.GRPOConfig option{hint}")
        report_to = self.trl.get("report_to")
        if report_to is not None:
            check_trackers(report_to)

    def _validate_methods(self) -> None:
        def one_of(key: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} {getattr(self, key)!r}: expected one of {', '.join(allowed)}")

        one_of("loss_type", TRL_LOSS_TYPES + METHOD_LOSS_TYPES)
        one_of("intrinsic", INTRINSICS)
        one_of("mode", MODES)
        one_of("rollout", ROLLOUTS)
        one_of("pacs_adv", ("rloo", "grpo"))
        one_of("pacs_weight", ("question", "none"))
        one_of("oreal_token_weights", ("none", "probe", "neuron"))
        one_of("merci_features", ("hidden", "neurons"))
        one_of("merci_aggregate", ("sum", "mean"))
        one_of("rlpt_corpus", ("gsm8k", "dolly", "mix"))
        one_of("rlpt_task", ("asr", "msr", "mix"))
        if self.loss_type in METHOD_LOSS_TYPES and self.grad_accum != 1:
            raise ValueError(
                f"loss_type {self.loss_type} compares the completions of a group inside one micro-batch: "
                f"grad_accum must be 1, got {self.grad_accum}"
            )
        if self.loss_type in METHOD_LOSS_TYPES and (self.neuron_reward_weight or self.intrinsic != "none"):
            raise ValueError(
                f"loss_type {self.loss_type} learns from the binary outcome label, so a shaped reward "
                "(neuron_reward_weight, intrinsic: merci) would not enter it: use the neuron loss term "
                "(neuron_loss_weight) or a TRL loss type"
            )
        if self.oreal_token_weights != "none" and self.loss_type != "oreal":
            raise ValueError(f"oreal_token_weights {self.oreal_token_weights!r} needs loss_type: oreal")
        if not 0.0 <= self.oreal_threshold < 1.0:
            raise ValueError(f"oreal_threshold must be in [0, 1), got {self.oreal_threshold}")
        needs_neurons = self.oreal_token_weights == "neuron" or (
            self.intrinsic == "merci" and self.merci_features == "neurons"
        )
        if needs_neurons and not self.neurons:
            raise ValueError(
                "oreal_token_weights: neuron / merci_features: neurons need a NeuronSet: pass --neurons PATH"
            )
        if self.intrinsic == "merci" and not self.merci_weight:
            raise ValueError("intrinsic: merci needs merci_weight != 0 (its weight beside accuracy_weight)")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        for key in ("merci_coins", "merci_hidden", "merci_updates", "merci_batch", "merci_buffer", "rlpt_texts"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.rlpt_context < 1 or self.rlpt_judge_tokens < 1:
            raise ValueError("rlpt_context and rlpt_judge_tokens must be >= 1")

    def check_eval_overlap(self, benches: list[str], limit: int | None) -> None:
        """Training questions drawn from a benchmark that is also evaluated (no questions_file) must skip the
        evaluated slice (its first `limit` items): skip_questions >= limit. (mode rlpt trains on rlpt_corpus texts.)"""
        if self.questions_file or self.questions not in benches or self.mode == "rlpt":
            return
        if limit is None or self.skip_questions < limit:
            raise ValueError(
                f"trains on {self.questions} questions from #{self.skip_questions}, which overlap the evaluation's "
                f"first {limit or 'all'} items; set grpo.skip_questions >= eval.limit ({limit}) or train on another "
                "benchmark"
            )
