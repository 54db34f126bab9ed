"""GRPO rollouts through the shared engine (yfpo.engine.generate) instead of TRL's model.generate.

Used as TRL's `rollout_func` (GRPOTrainer's hook for custom generation): it gets the generation batch's prompt strings
(each prompt repeated num_generations times in a row, TRL's RepeatSampler) and returns their token ids and the
completions' token ids. The engine prefills each prompt once and samples its num_generations completions from that
cache; sampling follows TRL's generation config (do_sample, temperature, top_p; top_k, min_p and repetition_penalty
are not in the engine and are refused unless off). Sampling is seeded per prompt (the engine's `seeds=`): completion
j of the i-th prompt of a step draws from its own stream seeded by (run seed, global step, i, j), so the draws do not
depend on batching, and a resumed run samples what an uninterrupted one would. The engine samples by inverse CDF from
those streams, TRL's model.generate by torch.multinomial from the global generator: the same distribution (after the
same temperature and top-p processing), not the same draws; greedy decoding gives the same tokens.
"""

from __future__ import annotations

import hashlib

from yfpo.engine.generate import generate


def prompt_seed(seed: int, step: int, index: int, mode: str = "train") -> int:
    """The engine seed of the index-th prompt of a step's generation batch."""
    h = hashlib.sha256(f"grpo-rollout|{seed}|{step}|{mode}|{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFFFFFFFFFFFFFF


def repeated_blocks(prompts: list[str], n: int) -> bool:
    """True when `prompts` is consecutive blocks of n identical prompts (TRL's RepeatSampler order)."""
    return n > 0 and len(prompts) % n == 0 and all(prompts[i] == prompts[i - i % n] for i in range(len(prompts)))


def check_sampling(gc) -> None:
    if (gc.top_k or 0) > 0 or gc.min_p or (gc.repetition_penalty or 1.0) != 1.0:
        raise ValueError(
            "rollout: engine samples with temperature and top_p only; this config sets top_k / min_p / "
            "repetition_penalty (use rollout: trl)"
        )


def make_engine_rollout(seed: int, backend: str = "auto"):
    """A TRL rollout_func that generates through yfpo.engine with `backend` (auto: fast-attn on CPU)."""

    def rollout(prompts: list[str], trainer) -> dict:
        if not prompts or not isinstance(prompts[0], str):
            raise ValueError("rollout: engine takes chat-templated prompt strings (yfpo's GRPO datasets)")
        tok = trainer.processing_class
        gc = trainer.generation_config
        check_sampling(gc)
        mode = "train" if trainer.model.training else "eval"
        g = trainer.num_generations if mode == "train" else trainer.num_generations_eval
        uniq, n = (prompts[::g], g) if repeated_blocks(prompts, g) else (prompts, 1)
        model = trainer.accelerator.unwrap_model(trainer.model)
        gens = generate(
            model,
            tok,
            uniq,
            max_new_tokens=trainer.max_completion_length,
            batch_size=len(prompts),
            do_sample=bool(gc.do_sample),
            temperature=gc.temperature or 1.0,
            top_p=gc.top_p if gc.top_p is not None else 1.0,
            num_return_sequences=n,
            seed=seed,
            seeds=[prompt_seed(seed, trainer.state.global_step, i, mode) for i in range(len(uniq))],
            backend=backend,
            progress=False,
            desc="rollout",
        )
        prompt_ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        return {"prompt_ids": prompt_ids, "completion_ids": [list(x.token_ids) for x in gens], "logprobs": None}

    return rollout
