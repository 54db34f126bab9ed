"""Teacher-forced log-likelihood of responses given prompts (batched, right-padded, no generation)."""

from __future__ import annotations

import torch


def _right_padded(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> right-padded (ids, attention mask), both (len(seqs), longest)."""
    L = max(len(t) for t in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, t in enumerate(seqs):
        ids[r, : len(t)] = torch.tensor(t)
        mask[r, : len(t)] = 1
    return ids, mask


def _batches(model, seqs: list[list[int]], batch_size: int, pad: int, *, progress: bool, desc: str):
    """Yield (indices, ids, mask) of right-padded batches of `seqs`, longest first, with the model in eval mode
    (restored afterwards) and a progress bar."""
    from yfpo.utils import progress as bar

    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    was_training = model.training
    model.eval()
    pbar = bar(total=len(seqs), desc=desc, unit="seq", disable=None if progress else True)
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = _right_padded([seqs[i] for i in idx], pad)
            yield idx, ids, mask
            pbar.update(len(idx))
    finally:
        pbar.close()
        if was_training:
            model.train()


@torch.no_grad()
def response_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    progress: bool = True,
    desc: str = "loglik",
) -> list[tuple[float, int]]:
    """(sum of log p(response token | prefix), number of response tokens) for each (prompt, response).

    Prompts are already-templated strings; the response is tokenized separately and appended, so the
    split between prompt and response tokens is exact. Sequences longer than max_length are cut from the
    left of the prompt.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts vs {len(responses)} responses")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = []
    for p, r in zip(prompts, responses):
        pi = tokenizer(p, add_special_tokens=False).input_ids
        ri = tokenizer(r, add_special_tokens=False).input_ids
        ids = (pi + ri)[-max_length:]
        n_resp = min(len(ri), len(ids) - 1)
        seqs.append((ids, n_resp))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    for idx, ids, mask in _batches(model, [t for t, _ in seqs], batch_size, pad, progress=progress, desc=desc):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_lp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for r, i in enumerate(idx):
            t, n_resp = seqs[i]
            end = len(t) - 1  # predictions for tokens 1..len-1 live at positions 0..len-2
            lp = tok_lp[r, end - n_resp : end].sum().item() if n_resp > 0 else 0.0
            out[i] = (lp, n_resp)
    return out


@torch.no_grad()
def next_token_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    token_ids: list[int],
    *,
    batch_size: int = 8,
    max_length: int = 1024,
    progress: bool = True,
    desc: str = "loglik",
) -> list[list[float]]:
    """log p(token | prompt) for each prompt and each of `token_ids`: one forward pass per prompt.

    The same numbers as response_logprobs(prompt, response) for single-token responses, at 1/len(token_ids)
    of the cost (multiple-choice scoring by answer letter).
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = [tokenizer(p, add_special_tokens=False).input_ids[-max_length:] for p in prompts]
    out: list[list[float]] = [[] for _ in seqs]
    cand = torch.tensor(token_ids, dtype=torch.long, device=device)
    for idx, ids, mask in _batches(model, seqs, batch_size, pad, progress=progress, desc=desc):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        last = torch.tensor([len(seqs[i]) - 1 for i in idx], device=device)
        lp = torch.log_softmax(logits[torch.arange(len(idx), device=device), last].float(), dim=-1)[:, cand]
        for r, i in enumerate(idx):
            out[i] = lp[r].tolist()
    return out
