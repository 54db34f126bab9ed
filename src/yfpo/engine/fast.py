"""The fast path ("fast" backend): the same HF model and forward pass as the reference, driven by a lean decode loop.

What makes it faster than `model.generate` at batch 16 (measured in benchmarks/RESULTS.md, "Generation backends"):
  * batches are filled by tokens, not rows: prompts sorted by length are packed until rows x (longest prompt +
    max_new_tokens) reaches `token_budget`, so short prompts run in wide batches (decode is cheaper per token
    the wider the batch, up to the compute limit);
  * finished rows are dropped from the batch and the KV cache (`DynamicCache.batch_select_indices`), so late
    steps only pay for the rows still running;
  * n samples of one prompt share one prefill: the prompt is processed once and its cache repeated n times;
  * no logits processors / stopping-criteria machinery per step: greedy is an argmax, sampling is temperature
    then top-p then a multinomial draw, as in HF.
Greedy outputs are meant to be identical to the HF reference (same weights, same float32 ops; the only differences
are the padding a row sees and the batch it runs in, the same freedom the reference has); how often they are is
measured, not assumed. The library call this would become: transformers' continuous batching (`generate_batch`),
once it runs well on CPU (measured: see RESULTS.md).
"""

from __future__ import annotations

import hashlib

import torch
from transformers import DynamicCache

DEFAULT_TOKEN_BUDGET = 16384  # KV positions per batch: ~0.75 GB of float32 cache for the 135M default model
MAX_ROWS = 128


def pack_batches(
    lengths: list[int], max_new_tokens: int, token_budget: int, min_rows: int = 1, max_rows: int = MAX_ROWS
) -> list[list[int]]:
    """Indices sorted longest-first, cut so each batch has rows x (its longest prompt + max_new_tokens) <= budget.

    A batch always gets at least `min_rows` rows (and one row even when that alone is over the budget)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    i = 0
    while i < len(order):
        longest = lengths[order[i]] + max_new_tokens
        rows = max(min_rows, 1, token_budget // max(longest, 1))
        batches.append(order[i : i + min(rows, max_rows)])
        i += len(batches[-1])
    return batches


def _sample_next(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """HF's order: temperature, then top-p (keep the smallest set with mass >= top_p), then a multinomial draw."""
    scores = logits / temperature if temperature not in (None, 1.0) else logits
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=gen).squeeze(1)


class _StopWatch:
    """Per-row stop-string check on the decoded tail: finds the first token that completes a stop string (what
    HF's StopStringCriteria stops at), decoding only the last few tokens of the row each step."""

    def __init__(self, tokenizer, stop: list[str] | None):
        self.tok = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.window = max((len(s) for s in self.stop), default=0) + 4  # tokens; every token is >= 1 character

    def hit(self, row: list[int]) -> bool:
        if not self.stop:
            return False
        # checked after every token, so the first step whose tail holds a stop string is the one that completed it
        tail = self.tok.decode(row[-self.window :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


@torch.no_grad()
def decode_batch(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    n: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    gen: torch.Generator | None = None,
    stopper: _StopWatch | None = None,
) -> list[tuple[list[int], str]]:
    """Decode a left-padded batch; returns per row (prompt-major, n per prompt) its new tokens and finish reason
    (eos: ended by an end-of-turn token, included; stop: a stop string was completed; length)."""
    cache = DynamicCache(config=model.config)
    pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1, :].float()
    if n > 1:  # one prefill per prompt, its cache repeated for the n samples
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        attention_mask = attention_mask.repeat_interleave(n, dim=0)
        pos = pos.repeat_interleave(n, dim=0)
    rows = logits.shape[0]
    alive = torch.arange(rows)  # original row index of each row still in the batch
    tokens: list[list[int]] = [[] for _ in range(rows)]
    finish = ["length"] * rows
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long) if eos_ids else None
    next_pos = pos[:, -1:] + 1
    for step in range(max_new_tokens):
        nxt = _sample_next(logits, temperature, top_p, gen) if do_sample else logits.argmax(dim=-1)
        done = torch.isin(nxt, eos) if eos is not None else torch.zeros_like(nxt, dtype=torch.bool)
        ids = nxt.tolist()
        for j, r in enumerate(alive.tolist()):
            tokens[r].append(ids[j])
            if done[j]:
                finish[r] = "eos"
            elif stopper is not None and stopper.hit(tokens[r]):
                finish[r] = "stop"
                done[j] = True
        if step == max_new_tokens - 1:
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            alive, nxt, next_pos, attention_mask = alive[keep], nxt[keep], next_pos[keep], attention_mask[keep]
            cache.batch_select_indices(keep)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        out = model(
            input_ids=nxt.unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float()
        next_pos = next_pos + 1
    return list(zip(tokens, finish))


def batch_seed(seed: int, prompts: list[str]) -> int:
    h = hashlib.sha256(("\x00".join(prompts) + f"|{seed}").encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF
