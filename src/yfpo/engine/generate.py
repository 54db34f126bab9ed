"""Batched generation behind one call, `generate`; the backends are listed in yfpo.engine.backends.

HF backend (the reference): prompts are sorted by length and cut into batches (less padding), left-padded, generated
with the KV cache, and returned in the caller's order. Sampling is reproducible: each batch seeds its
own generator from `seed` and the batch's prompt texts, so the same prompts give the same samples
whatever else is in the call (resume-safe).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import torch


@dataclass
class Generation:
    text: str
    n_tokens: int
    truncated: bool  # stopped by max_new_tokens (no end-of-turn token, no stop string)
    finish: str = "eos"  # eos | stop | length


def _batch_seed(seed: int, prompts: list[str]) -> int:
    h = hashlib.sha256(("\x00".join(prompts) + f"|{seed}").encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _model_dir(model) -> str | None:
    p = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "name_or_path", None)
    return p if p and os.path.isdir(p) else None


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
    else the fastest exact CPU path ("fast"), else the HF reference. token_budget: KV positions per batch for the
    fast path (rows x (longest prompt + max_new_tokens); default: what fits yfpo.engine.fast.KV_BUDGET_BYTES for
    this model, at most MAX_ROWS rows); batch_size is then the fewest rows a batch gets.

    seeds (sampling only): one seed per prompt; sample j of prompt i then depends only on (seeds[i], j) and the
    model, never on the other prompts of the call or how they are batched (fast backends: one random stream per
    row; hf: one generate call per prompt), so callers can fill wide batches with many items and still resume
    item by item. Without seeds, each batch draws from one stream seeded by `seed` and its prompts."""
    from yfpo.engine.backends import resolve

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


def _generate_vllm_backend(
    model, tokenizer, prompts, *, max_new_tokens, stop, do_sample, temperature, top_p, num_return_sequences, seed, **_
):  # pragma: no cover - needs a GPU + vllm
    return _generate_vllm(
        _model_dir(model) or model,
        prompts,
        max_new_tokens=max_new_tokens,
        stop=stop,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=num_return_sequences,
        seed=seed,
    )


def _eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if src is None:
            continue
        ids.update(src if isinstance(src, (list, tuple)) else [src])
    vocab = tokenizer.get_vocab()  # (slow on big vocabularies: once, not per token)
    for tok in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
        tid = vocab.get(tok)
        if (
            tid is not None
            and tid != tokenizer.unk_token_id
            and tok in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<end_of_turn>")
        ):
            ids.add(tid)
    return sorted(ids)


def _finish_row(
    row: list[int], tokenizer, eos_ids: list[int], pad_id: int | None, stop: list[str] | None
) -> tuple[int, str, str]:
    """One generated row -> (number of generated tokens, text, finish reason).

    A row ends at its first end-of-turn token (finish "eos", the token counted, not in the text). HF pads
    a row that finished before the others with pad_id; a row stopped by a stop string is such a row, so
    trailing pads are not counted. The text is cut before the first stop string (finish "stop"); a row
    that ran to max_new_tokens has finish "length".
    """
    eos = set(eos_ids)
    n_tok, finish = len(row), "length"
    for j, t in enumerate(row):
        if t in eos:
            n_tok, finish = j + 1, "eos"
            break
    if finish == "length" and pad_id is not None:
        while n_tok > 0 and row[n_tok - 1] == pad_id:
            n_tok -= 1
        if n_tok < len(row):
            finish = "stop"  # HF finished this row early (stop string) and padded it
    text = tokenizer.decode(row[: n_tok - 1] if finish == "eos" else row[:n_tok], skip_special_tokens=True)
    if stop:
        cut = [text.find(s) for s in stop if s and s in text]
        if cut:
            text, finish = text[: min(cut)], "stop"
    return n_tok, text, finish


@torch.no_grad()
def _generate_hf(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens,
    batch_size,
    stop,
    do_sample,
    temperature,
    top_p,
    num_return_sequences,
    seed,
    progress,
    desc,
    seeds=None,
    **_,
) -> list[Generation]:
    from yfpo.utils import progress as bar

    n = num_return_sequences
    results: list[Generation | None] = [None] * (len(prompts) * n)
    if not prompts:
        return []
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # batching needs a pad token; restored below
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    rows_per_batch = max(1, batch_size // n) if n > 1 else batch_size
    if seeds is not None:  # seeded per prompt: one prompt per call, its seed alone seeding it
        rows_per_batch = 1
    batches = [order[i : i + rows_per_batch] for i in range(0, len(order), rows_per_batch)]
    was_training = model.training
    model.eval()
    total_new, t0 = 0, time.time()
    pbar = bar(total=len(prompts) * n, desc=desc, unit="seq", disable=None if progress else True)
    try:
        for idx in batches:
            texts = [prompts[i] for i in idx]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen_kwargs = dict(
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                num_return_sequences=n,
                pad_token_id=pad_id,
                eos_token_id=eos_ids,
            )
            if do_sample:
                gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
                torch.manual_seed(_batch_seed(seed, texts) if seeds is None else seeds[idx[0]] & 0x7FFFFFFFFFFFFFFF)
            else:
                gen_kwargs.update(temperature=None, top_p=None, top_k=None)
            if stop:
                gen_kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
            out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc.input_ids.shape[1] :]
            for r in range(new.shape[0]):
                n_tok, text, finish = _finish_row(new[r].tolist(), tokenizer, eos_ids, pad_id, stop)
                prompt_i = idx[r // n]
                results[prompt_i * n + (r % n)] = Generation(text, n_tok, finish == "length", finish)
                total_new += n_tok
            pbar.update(new.shape[0])
            pbar.set_postfix(tok_s=f"{total_new / max(time.time() - t0, 1e-9):.0f}")
    finally:
        pbar.close()
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


class _PaddingSide:
    """Left padding and a pad token for the duration of a block (batching needs both); the tokenizer is restored."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def __enter__(self):
        self.side, self.pad = self.tok.padding_side, self.tok.pad_token
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        return self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def __exit__(self, *exc):
        self.tok.padding_side = self.side
        if self.pad is None:
            self.tok.pad_token = None


@torch.no_grad()
def _generate_fast(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens,
    batch_size,
    stop,
    do_sample,
    temperature,
    top_p,
    num_return_sequences,
    seed,
    progress,
    desc,
    token_budget=None,
    attn_kernel=False,
    seeds=None,
    **_,
) -> list[Generation]:
    """The "fast" backend: the HF model driven by yfpo.engine.fast's decode loop (see there for what it changes);
    with attn_kernel ("fast-attn"), its decode steps attend through yfpo.engine.attn_kernel's compiled kernel."""
    from yfpo.engine.fast import RowStreams, _StopWatch, batch_seed, decode_batch, default_token_budget, pack_batches
    from yfpo.utils import progress as bar

    n = num_return_sequences
    results: list[Generation | None] = [None] * (len(prompts) * n)
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    budget = (token_budget or default_token_budget(model)) // n  # n samples share a prompt's prefill, not its cache
    batches = pack_batches(lengths, max_new_tokens, budget, min_rows=max(1, batch_size // n))
    stopper = _StopWatch(tokenizer, stop) if stop else None
    was_training = model.training
    model.eval()
    total_new, t0 = 0, time.time()
    pbar = bar(total=len(prompts) * n, desc=desc, unit="seq", disable=None if progress else True)
    try:
        with _PaddingSide(tokenizer):
            for idx in batches:
                texts = [prompts[i] for i in idx]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                gen = streams = None
                if do_sample and seeds is not None:
                    streams = RowStreams([seeds[i] for i in idx], n, max_new_tokens)
                elif do_sample:
                    gen = torch.Generator(device=device).manual_seed(batch_seed(seed, texts))
                rows = decode_batch(
                    model,
                    enc.input_ids,
                    enc.attention_mask,
                    max_new_tokens=max_new_tokens,
                    eos_ids=eos_ids,
                    n=n,
                    do_sample=do_sample,
                    temperature=temperature,
                    top_p=top_p,
                    gen=gen,
                    stopper=stopper,
                    attn_kernel=attn_kernel,
                    streams=streams,
                )
                for r, (toks, _finish) in enumerate(rows):
                    n_tok, text, finish = _finish_row(toks, tokenizer, eos_ids, None, stop)
                    results[idx[r // n] * n + (r % n)] = Generation(text, n_tok, finish == "length", finish)
                    total_new += n_tok
                pbar.update(len(rows))
                pbar.set_postfix(tok_s=f"{total_new / max(time.time() - t0, 1e-9):.0f}")
    finally:
        pbar.close()
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def _generate_fast_attn(model, tokenizer, prompts, **kw) -> list[Generation]:
    """The "fast-attn" backend: the fast loop with the compiled decode-attention kernel."""
    return _generate_fast(model, tokenizer, prompts, attn_kernel=True, **kw)


_BF16_COPIES: dict = {}


def _generate_fast_bf16(model, tokenizer, prompts, **kw) -> list[Generation]:
    """The fast loop on a bfloat16 copy of the model (made once per model and weight version, kept for the process:
    a model updated in place since, as in training, gets a fresh copy)."""
    import copy

    if model.dtype != torch.bfloat16:
        key = (id(model), sum(p._version for p in model.parameters()))
        if _BF16_COPIES.get("key") != key:
            _BF16_COPIES.clear()
            _BF16_COPIES.update(key=key, model=copy.deepcopy(model).to(torch.bfloat16).eval())
        model = _BF16_COPIES["model"]
    return _generate_fast(model, tokenizer, prompts, **kw)


_VLLM_ENGINES: dict = {}


def _generate_vllm(
    model_path, prompts, *, max_new_tokens, stop, do_sample, temperature, top_p, num_return_sequences, seed
) -> list[Generation]:  # pragma: no cover - needs a GPU + vllm
    """vLLM backend (GPU only). Not exercised by the CPU test suite. One engine per model path and seed is
    kept for the process: run_eval calls generate once per chunk, and an engine takes a while to start."""
    from vllm import LLM, SamplingParams

    key = (str(model_path), seed)
    if key not in _VLLM_ENGINES:
        _VLLM_ENGINES.clear()  # one engine at a time: each reserves most of the GPU memory
        _VLLM_ENGINES[key] = LLM(model=str(model_path), seed=seed, dtype="auto")
    llm = _VLLM_ENGINES[key]
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
