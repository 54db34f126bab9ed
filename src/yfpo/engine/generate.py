"""Batched generation behind one call, `generate`; the backends are listed in yfpo.engine.backends, their
shared pieces (`Generation`, end-of-turn ids, how a row ends) in yfpo.engine.common."""

from __future__ import annotations

from yfpo.engine.backends import resolve
from yfpo.engine.common import Generation

__all__ = ["Generation", "generate"]  # Generation: the type generate returns, importable from here too


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    stop: list[str] | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    seed: int = 0,
    backend: str = "auto",
    progress: bool = True,
    desc: str = "generate",
    token_budget: int | None = None,
    seeds: list[int] | None = None,
) -> list[Generation]:
    """Generate for already-templated prompt strings; returns prompt-major list (len(prompts) * n).

    backend: auto | hf | fast | ct2 | ct2-int8 | llamacpp | vllm (yfpo.engine.backends). `auto` = vLLM with a GPU,
    else the fastest exact CPU path ("fast-attn" or "fast"), else the HF reference. token_budget: KV positions per batch for the
    fast path (rows x (longest prompt + max_new_tokens); default: what fits yfpo.engine.fast.KV_BUDGET_BYTES for
    this model, at most MAX_ROWS rows); batch_size is then the fewest rows a batch gets.

    seeds (sampling only): one seed per prompt; sample j of prompt i then depends only on (seeds[i], j) and the
    model, never on the other prompts of the call or how they are batched (fast backends: one random stream per
    row; hf: one generate call per prompt), so callers can fill wide batches with many items and still resume
    item by item. Without seeds, each batch draws from one stream seeded by `seed` and its prompts."""
    b = resolve(backend, model)
    if not prompts:
        return []
    extra = {}
    if seeds is not None:
        if len(seeds) != len(prompts):
            raise ValueError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts (one seed per prompt)")
        if do_sample:
            if b.name not in SEEDED_BACKENDS:
                raise ValueError(
                    f"backend {b.name!r} has no per-prompt seeded sampling (seeds=); use one of "
                    f"{', '.join(SEEDED_BACKENDS)}"
                )
            extra["seeds"] = list(seeds)
    return b.run(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop=stop,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=num_return_sequences,
        seed=seed,
        progress=progress,
        desc=desc,
        token_budget=token_budget,
        **extra,
    )


# the backends that take seeds= (per-prompt seeded sampling, independent of the batch)
SEEDED_BACKENDS = ("hf", "fast", "fast-attn", "fast-bf16")
