"""Online RL on TRL's GRPOTrainer with a verifiable accuracy reward and the neuron signal, two ways (SPEC section 9).

`NeuronGRPOTrainer` subclasses trl.GRPOTrainer (trl 1.16); generation, advantages, the clipped policy loss,
KL, vLLM (`use_vllm`), checkpoints and resume stay TRL's. It adds:

(a) a reward function `NeuronReward`: phi(x, y) (SPEC section 3, `neurons.capture.phi_from_acts`) of each completion
    under the current policy, computed without grad from hooks on the NeuronSet's down projections, standardised
    within its group of `num_generations` completions, and combined with accuracy through TRL's `reward_weights`.
(b) a differentiable loss term in `_compute_loss`: the activations come from the policy forward that computes the
    GRPO loss (hooks inside `capture.window("policy")`, no extra forward); for every same-group pair of a
    positive-advantage completion i and a negative-advantage completion j,
        L_neuron = lam * mean_(i,j) -log sigmoid(gamma * (phi_i - phi_j) / s)
    with s the std of those pair margins at the first step (frozen and stored in the run dir, like the DPO
    trainer's `ref_std` calibration), so gamma = 1 means one margin std moves the logit by one nat.

Both take any NeuronSet file, so the random-neuron and flipped-sign controls are just other `--neurons` files.
With both weights at 0 the trainer is TRL's GRPOTrainer (tested: same loss and gradients on the same batch).

Pairs are formed within one micro-batch: keep `batch_size` a multiple of `num_generations` and grad_accum 1 (the
default) so every micro-batch holds whole groups; TRL shuffles the generation batch before splitting it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from trl import GRPOConfig, GRPOTrainer

from yfpo.neurons.capture import NeuronCapture
from yfpo.train.grpo_config import METHOD_LOSS_TYPES, GRPORunConfig
from yfpo.train.online.hooks import MerciReward, OnlineMethods, RLPTReward, rlpt_dataset
from yfpo.train.online.rollout import make_engine_rollout

NEURON_SCALE_FILE = "neuron_scale.json"


# ---------------------------------------------------------------- pure functions (tested directly)


def group_standardize(
    values: torch.Tensor, group_size: int, valid: torch.Tensor | None = None, eps: float = 1e-4
) -> torch.Tensor:
    """(v - mean_g) / (std_g + eps) within consecutive groups; invalid entries are left out and come back NaN."""
    if values.numel() % group_size:
        raise ValueError(f"{values.numel()} values do not split into groups of {group_size}")
    v = values.float().view(-1, group_size)
    ok = torch.ones_like(v, dtype=torch.bool) if valid is None else valid.view(-1, group_size).bool()
    vm = torch.where(ok, v, torch.nan)
    mean = torch.nanmean(vm, dim=1, keepdim=True)
    n = ok.sum(1, keepdim=True)
    var = torch.nansum((vm - mean) ** 2, dim=1, keepdim=True) / (n - 1).clamp(min=1)  # unbiased, like TRL's nanstd
    out = (vm - mean) / (var.sqrt() + eps)
    return out.view(-1)


def pair_margins(
    phi: torch.Tensor, advantages: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """phi_i - phi_j for every pair in the same group with advantage_i > 0 > advantage_j (both valid)."""
    ok = torch.ones_like(advantages, dtype=torch.bool) if valid is None else valid.bool()
    pos, neg = (advantages > 0) & ok, (advantages < 0) & ok
    sel = (groups[:, None] == groups[None, :]) & pos[:, None] & neg[None, :]
    return (phi[:, None] - phi[None, :])[sel]


def neuron_pair_loss(margins: torch.Tensor, gamma: float, scale: float) -> torch.Tensor:
    """mean -log sigmoid(gamma * m / scale) over the pair margins (0 with no pair, keeping the graph)."""
    if margins.numel() == 0:
        return margins.sum() * 0.0
    return -F.logsigmoid(gamma * margins / scale).mean()


# ---------------------------------------------------------------- rewards


def accuracy_reward_fn(extractor: str = "math_verify"):
    """TRL reward function: 1.0 when the completion's answer (by `extractor`) equals the gold `answer` column."""
    from yfpo.grading import grade  # math-verify with its signal timeouts off (parsing_timeout=None)

    def accuracy(prompts, completions, answer, kind=None, **kwargs):
        kinds = kind or ["number"] * len(completions)
        return [float(grade(c, a, k)["correct"][extractor]) for c, a, k in zip(completions, answer, kinds)]

    return accuracy


class NeuronReward:
    """TRL reward function (a): group-standardised phi of each completion under the current policy (no grad)."""

    __name__ = "neuron"

    def __init__(self, group_size: int, mask_truncated: bool = False, chunk: int = 8):
        self.group_size = group_size
        self.mask_truncated = mask_truncated
        self.chunk = chunk
        self.trainer: NeuronGRPOTrainer | None = None  # set by the trainer once it is built

    @torch.no_grad()
    def raw_phi(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> torch.Tensor:
        tr = self.trainer
        cap, model, pad = tr.capture, tr.model, tr._tokenizer.pad_token_id
        dev = next(model.parameters()).device
        out = []
        for s in range(0, len(completion_ids), self.chunk):
            ps, cs = prompt_ids[s : s + self.chunk], completion_ids[s : s + self.chunk]
            seqs = [list(p) + list(c) for p, c in zip(ps, cs)]
            width = max(len(x) for x in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            att = torch.zeros_like(ids)
            resp = torch.zeros_like(ids)
            for i, (p, x) in enumerate(zip(ps, seqs)):
                ids[i, : len(x)] = torch.tensor(x)
                att[i, : len(x)] = 1
                resp[i, len(p) : len(x)] = 1
            with cap.window("reward"):
                model(input_ids=ids.to(dev), attention_mask=att.to(dev), use_cache=False)
            out.append(cap.phi("reward", resp.to(dev)).float().cpu())
            cap.clear()
        return torch.cat(out)

    def __call__(self, prompts, completions, completion_ids, log_metric=None, **kwargs):
        tr = self.trainer
        if tr is None or tr._last_prompt_ids is None:
            raise RuntimeError("NeuronReward needs its NeuronGRPOTrainer (it reads the prompt ids of the batch)")
        phi = self.raw_phi(tr._last_prompt_ids, completion_ids)
        valid = None
        if self.mask_truncated:
            stop = {*tr.eos_token_ids, tr._tokenizer.pad_token_id}
            valid = torch.tensor([len(c) > 0 and c[-1] in stop for c in completion_ids])
        z = group_standardize(phi, self.group_size, valid)
        if log_metric is not None:
            log_metric("neuron/phi", phi.mean().item())
            log_metric("neuron/phi_std", phi.std().item() if phi.numel() > 1 else 0.0)
        return [None if torch.isnan(v) else float(v) for v in z]  # None: left out (TRL's nansum)


# ---------------------------------------------------------------- trainer


def neuron_loss_term(tr: "NeuronGRPOTrainer", inputs) -> torch.Tensor:
    """(b): lam * mean -log sigmoid(gamma (phi_i - phi_j) / s) over the micro-batch's same-group (pos, neg) pairs, from
    the activations the policy forward captured (divided by the accumulation steps like TRL's loss); logs it."""
    cmask = inputs["completion_mask"]
    if "tool_mask" in inputs:
        cmask = cmask * inputs["tool_mask"]
    mask = torch.cat([torch.zeros_like(inputs["prompt_mask"]), cmask], dim=1)
    phi = tr.capture.phi("policy", mask)
    tr.capture.clear()
    adv = inputs["advantages"]
    adv = adv if adv.dim() == 1 else adv.mean(-1)
    m = pair_margins(phi, adv, inputs["group_ids"], valid=cmask.sum(1) > 0)
    scale = tr._scale(m)
    mode = "train" if tr.model.training else "eval"
    if scale is None:  # no pair yet to calibrate on: the term waits (logged as 0)
        term = phi.sum() * 0.0
    else:
        term = neuron_pair_loss(m, tr.ycfg.neuron_gamma, scale)
    normalizer = tr.current_gradient_accumulation_steps if mode == "train" else 1.0
    met = tr._metrics[mode]
    met["neuron/loss_term"].append(term.item())
    met["neuron/pairs"].append(float(m.numel()))
    if m.numel():
        met["neuron/pair_margin"].append(m.mean().item())
        met["neuron/pair_accuracy"].append((m > 0).float().mean().item())
    met["neuron/phi_policy"].append(phi.mean().item())
    return tr.ycfg.neuron_loss_weight * term / normalizer


class NeuronGRPOTrainer(GRPOTrainer):
    """GRPOTrainer + neuron reward (a) and loss term (b) + the yfpo.train.online methods (hooks only; the logic is in
    those modules). Both neuron weights 0, loss_type a TRL one, no intrinsic reward: exactly TRL's GRPOTrainer."""

    def __init__(self, *args, ycfg: GRPORunConfig, neuron_set=None, run_dir: str | Path | None = None, **kwargs):
        self.ycfg = ycfg
        self.run_dir = Path(run_dir) if run_dir else None
        self._last_prompt_ids = self._last_rewards = None
        self.neuron_scale: float | None = None
        if (ycfg.neuron_reward_weight or ycfg.neuron_loss_weight) and neuron_set is None:
            raise ValueError("a neuron weight != 0 needs a NeuronSet (--neurons PATH)")
        super().__init__(*args, **kwargs)
        self.capture = NeuronCapture(self.model, neuron_set) if neuron_set is not None else None
        self.online = OnlineMethods(self, ycfg, neuron_set)
        for f in self.reward_funcs:
            if hasattr(f, "trainer"):
                f.trainer = self
        if ycfg.neuron_loss_weight and ycfg.neuron_norm == "raw":
            self.neuron_scale = 1.0
        elif ycfg.neuron_loss_weight and self.run_dir and (self.run_dir / NEURON_SCALE_FILE).exists():
            self.neuron_scale = json.loads((self.run_dir / NEURON_SCALE_FILE).read_text())["scale"]  # resume

    def _generate(self, prompts):
        out = super()._generate(prompts)
        self._last_prompt_ids = out[0]  # the prompt ids of this generation batch, for NeuronReward / MERCI
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._last_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._last_rewards

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        n = out["advantages"].size(0)
        g = self.num_generations if self.model.training else self.num_generations_eval
        # TRL shuffles and splits the batch after this; the group id and the outcome travel with each completion
        out["group_ids"] = torch.arange(n, device=out["advantages"].device) // g
        k = self.accelerator.process_index * n  # this process's slice of the gathered rewards (column 0: the task)
        out["outcome"] = torch.nan_to_num(self._last_rewards[k : k + n, 0]).to(out["advantages"].device)
        return out

    def _compute_loss(self, model, inputs):
        own = self.ycfg.loss_type in METHOD_LOSS_TYPES
        if not self.ycfg.neuron_loss_weight or self.capture is None:
            return self.online.loss(model, inputs) if own else super()._compute_loss(model, inputs)
        with self.capture.window("policy"):
            loss = self.online.loss(model, inputs) if own else super()._compute_loss(model, inputs)
        return loss + neuron_loss_term(self, inputs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            self.online.save(Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}")

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.online.load(checkpoint)

    def _scale(self, margins: torch.Tensor) -> float | None:
        """s of the loss term: frozen at the first batch with >= 2 pairs (ref_std), stored for resume."""
        if self.neuron_scale is not None:
            return self.neuron_scale
        if margins.numel() < 2:
            return None
        s = margins.detach().float().std().item()
        if not s > 0:
            return None
        self.neuron_scale = s
        if self.run_dir is not None and self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / NEURON_SCALE_FILE).write_text(
                json.dumps(
                    {"scale": s, "pairs": int(margins.numel()), "step": self.state.global_step, "norm": "ref_std"}
                )
            )
        return s


# ---------------------------------------------------------------- run


def build_question_dataset(cfg: GRPORunConfig, tokenizer):
    """Benchmark questions -> datasets.Dataset of (chat-templated prompt, gold answer, answer kind)."""
    from datasets import Dataset

    from yfpo.data.problems import benchmark_kind, load_benchmark
    from yfpo.engine.prompts import build_prompt

    probs = load_benchmark(cfg.questions, data_dir=cfg.data_dir, path=cfg.questions_file)[cfg.skip_questions :]
    if cfg.limit_questions:
        probs = probs[: cfg.limit_questions]
    if not probs:
        raise ValueError(f"questions {cfg.questions!r}: no problems loaded (skip_questions {cfg.skip_questions})")
    kind = benchmark_kind(cfg.questions)
    rows = [
        {
            "prompt": build_prompt(tokenizer, p.question, shots=cfg.shots, data_dir=cfg.data_dir),
            "answer": str(p.answer),
            "kind": kind,
        }
        for p in probs
    ]
    return Dataset.from_list(rows)


def make_grpo_args(cfg: GRPORunConfig, out: Path) -> GRPOConfig:
    """trl.GRPOConfig from cfg: yfpo's keys, yfpo's defaults for the options below `defaults`, then cfg.trl (any
    other GRPOConfig option, overriding those defaults; the options yfpo sets are refused by cfg.validate())."""
    use_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    weights = [cfg.accuracy_weight] + ([cfg.neuron_reward_weight] if cfg.neuron_reward_weight else [])
    weights += [cfg.merci_weight] if cfg.intrinsic == "merci" else []
    defaults = dict(  # yfpo's defaults; cfg.trl overrides them
        report_to="none",  # metrics.jsonl is always written; trackers on request (trl.report_to)
        save_strategy="steps",
        disable_tqdm=os.environ.get("YFPO_NO_PROGRESS") == "1",
        save_only_model=False,
        log_completions=False,
        data_seed=cfg.seed,
    )
    trl = {k: ("none" if k == "report_to" and v is None else v) for k, v in cfg.trl.items()}
    kwargs = dict(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        loss_type="grpo" if cfg.loss_type in METHOD_LOSS_TYPES else cfg.loss_type,  # (TRL's loss is not used then)
        epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations,
        scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions,
        reward_weights=weights,
        use_vllm=cfg.use_vllm,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        use_cpu=use_cpu,
        bf16=cfg.dtype in ("bfloat16", "bf16"),
        **{**defaults, **trl},
    )
    try:
        return GRPOConfig(**kwargs)
    except (TypeError, ValueError) as e:  # TRL's / transformers' own check of a trl option: one line
        raise ValueError(f"grpo trl: {str(e).splitlines()[0]}") from None


def make_grpo_trainer(cfg: GRPORunConfig, model=None, tokenizer=None, callbacks=None, out: Path | None = None):
    """Everything `grpo` does before `.train()`: returns (trainer, run_dir)."""
    from yfpo.models import load_model
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.train.run_dir import MetricsJsonl, trackers_into

    cfg.validate()
    out = Path(out or cfg.output_dir)
    if cfg.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ValueError("use_vllm: true needs the vllm package (pip install vllm); it is not installed")
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device="cpu" if cfg.device == "cpu" else "auto")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = rlpt_dataset(cfg, tokenizer) if cfg.mode == "rlpt" else build_question_dataset(cfg, tokenizer)
    neuron_set = NeuronSet.load(cfg.neurons, model) if cfg.neurons else None
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            task_type="CAUSAL_LM",
        )
    if cfg.mode == "rlpt":
        device = "cpu" if cfg.device == "cpu" else "auto"
        rewards = [RLPTReward(cfg.rlpt_judge, cfg.rlpt_judge_tokens, cfg.rollout_backend, cfg.dtype, device)]
    else:
        rewards = [accuracy_reward_fn(cfg.extractor)]
    if cfg.neuron_reward_weight:
        rewards.append(NeuronReward(cfg.num_generations, mask_truncated=cfg.mask_truncated_completions))
    if cfg.intrinsic == "merci":
        rewards.append(MerciReward())
    rollout = None
    if cfg.rollout == "engine" and not cfg.use_vllm:  # TRL's vLLM path stays TRL's
        rollout = make_engine_rollout(cfg.seed, cfg.rollout_backend)
    trainer = NeuronGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=make_grpo_args(cfg, out),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=[MetricsJsonl(out / "metrics.jsonl"), *(callbacks or [])],
        ycfg=cfg,
        neuron_set=neuron_set,
        run_dir=out,
    )
    trackers_into(trainer, out)
    return trainer, out


def grpo(
    cfg: GRPORunConfig, resume: bool = True, callbacks=None, model=None, tokenizer=None, overwrite: bool = False
) -> Path:
    """Run (or resume) one GRPO run; the run directory is laid out like `yfpo train`'s (final/ loads with
    load_model), with the same strict resume: a folder made by another config is refused unless overwrite."""
    from yfpo import resume as strict
    from yfpo.train.run_dir import run_training

    cfg.validate()
    record = {
        **cfg.record(),
        "model": strict.model_identity(cfg.model),
        "neurons": strict.file_identity(cfg.neurons),
        "questions_file": strict.file_identity(cfg.questions_file),
    }  # inputs by content: a moved run folder still resumes
    return run_training(
        cfg,
        "grpo",
        record,
        lambda out: make_grpo_trainer(cfg, model=model, tokenizer=tokenizer, callbacks=callbacks, out=out),
        resume=resume,
        overwrite=overwrite,
        summary=lambda t: {"neuron_scale": t.neuron_scale},
    )
