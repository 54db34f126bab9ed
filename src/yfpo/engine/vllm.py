"""The "vllm" backend (GPU only; not exercised by the CPU test suite)."""

from __future__ import annotations

from yfpo.engine.common import Generation, model_dir


def generate_vllm_backend(
    model, tokenizer, prompts, *, max_new_tokens, stop, do_sample, temperature, top_p, num_return_sequences, seed, **_
):  # pragma: no cover - needs a GPU + vllm
    return generate_vllm(
        model_dir(model) or model,
        prompts,
        max_new_tokens=max_new_tokens,
        stop=stop,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=num_return_sequences,
        seed=seed,
    )


_ENGINES: dict = {}


def generate_vllm(
    model_path, prompts, *, max_new_tokens, stop, do_sample, temperature, top_p, num_return_sequences, seed
) -> list[Generation]:  # pragma: no cover - needs a GPU + vllm
    """vLLM backend (GPU only). Not exercised by the CPU test suite. One engine per model path and seed is
    kept for the process: run_eval calls generate once per chunk, and an engine takes a while to start."""
    from vllm import LLM, SamplingParams  # lazy: optional, GPU-only, heavy

    key = (str(model_path), seed)
    if key not in _ENGINES:
        _ENGINES.clear()  # one engine at a time: each reserves most of the GPU memory
        _ENGINES[key] = LLM(model=str(model_path), seed=seed, dtype="auto")
    llm = _ENGINES[key]
    sp = SamplingParams(
        n=num_return_sequences,
        max_tokens=max_new_tokens,
        stop=stop or None,
        temperature=temperature if do_sample else 0.0,
        top_p=top_p if do_sample else 1.0,
        seed=seed,
    )
    outs = llm.generate(prompts, sp)
    res = []
    for o in outs:
        for c in o.outputs:
            finish = "length" if c.finish_reason == "length" else ("stop" if isinstance(c.stop_reason, str) else "eos")
            res.append(Generation(c.text, len(c.token_ids), finish == "length", finish))
    return res
