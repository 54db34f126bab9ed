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


_HEAD_SCALERS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class _Scorer:
    """log-softmax of the LM head at chosen (row, position) pairs of a right-padded batch.

    The fast path runs the decoder once and applies the LM head only where a log-prob is read (the response
    tokens, or each prompt's last token), instead of materialising (batch x length x vocab) logits: for a
    49k-vocabulary model the head is ~20% of a forward and the full log-softmax dominates memory. It is checked
    once per call against the model's own forward on one row of the first batch; a model whose forward does more
    than decoder + head (logit scaling or soft-capping, a custom head) falls back to the full path."""

    def __init__(self, model):
        self.model = model
        self.fast = None  # decided on the first batch
        self.head = model.get_output_embeddings()
        try:
            self.decoder = model.get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            self.decoder = None
        if self.head is None or self.decoder is None or any(getattr(model.config, k, None) for k in _HEAD_SCALERS):
            self.fast = False

    def _full(self, ids, mask, rows, cols):
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return torch.log_softmax(logits[rows, cols].float(), dim=-1)

    def _head(self, ids, mask, rows, cols):
        h = self.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.log_softmax(self.head(h[rows, cols]).float(), dim=-1)

    def __call__(self, ids, mask, rows, cols):
        """(len(rows), vocab) log-probs of the next token at ids[rows, cols]."""
        if self.fast is None:
            got = self._head(ids, mask, rows, cols)
            r0 = int(rows[0])
            first = rows == r0
            ref = self._full(ids[r0 : r0 + 1], mask[r0 : r0 + 1], rows[first] - r0, cols[first])
            self.fast = bool(torch.allclose(got[first], ref, atol=1e-4, rtol=1e-4))
            return got if self.fast else self._full(ids, mask, rows, cols)
        return (self._head if self.fast else self._full)(ids, mask, rows, cols)


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
    score = _Scorer(model)
    for idx, ids, mask in _batches(model, [t for t, _ in seqs], batch_size, pad, progress=progress, desc=desc):
        rows, cols = [], []
        for r, i in enumerate(idx):
            t, n_resp = seqs[i]
            end = len(t) - 1  # predictions for tokens 1..len-1 live at positions 0..len-2
            rows += [r] * n_resp
            cols += range(end - n_resp, end)
        if not rows:
            for i in idx:
                out[i] = (0.0, 0)
            continue
        rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        ids, mask = ids.to(device), mask.to(device)
        logp = score(ids, mask, rows_t, cols_t)
        tok_lp = logp.gather(-1, ids[rows_t, cols_t + 1].unsqueeze(-1)).squeeze(-1)
        sums = torch.zeros(len(idx), dtype=tok_lp.dtype, device=device).index_add_(0, rows_t, tok_lp)
        for r, i in enumerate(idx):
            out[i] = (sums[r].item(), seqs[i][1])
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
    score = _Scorer(model)
    for idx, ids, mask in _batches(model, seqs, batch_size, pad, progress=progress, desc=desc):
        last = torch.tensor([len(seqs[i]) - 1 for i in idx], device=device)
        lp = score(ids.to(device), mask.to(device), torch.arange(len(idx), device=device), last)[:, cand]
        for r, i in enumerate(idx):
            out[i] = lp[r].tolist()
    return out
