"""GRPORunConfig: one online-RL run (TRL GRPOTrainer + accuracy reward + the neuron signal as reward or loss term).

Flat like TrainConfig so `load_config` and `--key value` overrides work the same way; the keys map onto
trl.GRPOConfig in `yfpo.train.grpo.make_grpo_args` (TRL option names kept where they exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXTRACTORS = ("math_verify", "strict", "flexible", "boxed")
NEURON_NORMS = ("ref_std", "raw")


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
    loss_type: str = "dapo"  # grpo | dr_grpo | dapo | bnpo | ...
    beta: float = 0.0
    num_generations: int = 4
    max_new_tokens: int = 256  # -> max_completion_length
    temperature: float = 1.0
    top_p: float = 1.0
    scale_rewards: str = "group"  # group | batch | none
    mask_truncated_completions: bool = False
    epsilon: float = 0.2
    use_vllm: bool = False

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
        return self
