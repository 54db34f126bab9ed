"""The "hf" backend, the reference: Hugging Face `model.generate` on length-sorted, left-padded batches of
batch_size rows, returned in the caller's order. Sampling is reproducible: each batch seeds its generator from
`seed` and the batch's prompt texts, so the same prompts give the same samples whatever else is in the call."""

from __future__ import annotations

import time

import torch

from yfpo.engine.common import Generation, batch_seed, eos_ids, finish_row
from yfpo.utils import progress as bar


@torch.no_grad()
def generate_hf(
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
    n = num_return_sequences
    results: list[Generation | None] = [None] * (len(prompts) * n)
    if not prompts:
        return []
    old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # batching needs a pad token; restored below
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_ids(model, tokenizer)
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
                eos_token_id=eos,
            )
            if do_sample:
                gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
                torch.manual_seed(batch_seed(seed, texts) if seeds is None else seeds[idx[0]] & 0x7FFFFFFFFFFFFFFF)
            else:
                gen_kwargs.update(temperature=None, top_p=None, top_k=None)
            if stop:
                gen_kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
            out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc.input_ids.shape[1] :]
            for r in range(new.shape[0]):
                row = new[r].tolist()
                n_tok, text, finish = finish_row(row, tokenizer, eos, pad_id, stop)
                prompt_i = idx[r // n]
                results[prompt_i * n + (r % n)] = Generation(text, n_tok, finish == "length", finish, row[:n_tok])
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
