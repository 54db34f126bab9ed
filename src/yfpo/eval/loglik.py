"""Teacher-forced log-likelihood of responses given prompts (batched, right-padded, no generation)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from yfpo.models.packing import packed_attention_mask


def _right_padded(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> right-padded (ids, attention mask), both (len(seqs), longest)."""
    L = max(len(t) for t in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, t in enumerate(seqs):
        ids[r, : len(t)] = torch.tensor(t)
        mask[r, : len(t)] = 1
    return ids, mask


@contextlib.contextmanager
def _scoring(model, total: int, *, progress: bool, desc: str):
    """The model in eval mode (restored afterwards) and a progress bar over `total` sequences, yielded."""
    from yfpo.utils import progress as bar

    was_training = model.training
    model.eval()
    pbar = bar(total=total, desc=desc, unit="seq", disable=None if progress else True)
    try:
        yield pbar
    finally:
        pbar.close()
        if was_training:
            model.train()


def _batches(model, seqs: list[list[int]], batch_size: int, pad: int, *, progress: bool, desc: str):
    """Yield (indices, ids, mask) of right-padded batches of `seqs`, longest first, with the model in eval mode
    (restored afterwards) and a progress bar."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    with _scoring(model, len(seqs), progress=progress, desc=desc) as pbar:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = _right_padded([seqs[i] for i in idx], pad)
            yield idx, ids, mask
            pbar.update(len(idx))


def _pos(position_ids) -> dict:
    return {} if position_ids is None else {"position_ids": position_ids}


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

    def _full(self, ids, mask, rows, cols, position_ids=None):
        logits = self.model(input_ids=ids, attention_mask=mask, **_pos(position_ids)).logits
        return torch.log_softmax(logits[rows, cols].float(), dim=-1)

    def _head(self, ids, mask, rows, cols, position_ids=None):
        h = self.decoder(input_ids=ids, attention_mask=mask, **_pos(position_ids)).last_hidden_state
        return torch.log_softmax(self.head(h[rows, cols]).float(), dim=-1)

    def __call__(self, ids, mask, rows, cols, position_ids=None):
        """(len(rows), vocab) log-probs of the next token at ids[rows, cols] (position ids: for packed rows)."""
        if self.fast is None:
            got = self._head(ids, mask, rows, cols, position_ids)
            r0 = int(rows[0])
            first = rows == r0
            one = slice(r0, r0 + 1)
            pos0 = position_ids[one] if position_ids is not None else None
            ref = self._full(ids[one], mask[one], rows[first] - r0, cols[first], pos0)
            self.fast = bool(torch.allclose(got[first], ref, atol=1e-4, rtol=1e-4))
            return got if self.fast else self._full(ids, mask, rows, cols, position_ids)
        return (self._head if self.fast else self._full)(ids, mask, rows, cols, position_ids)


@dataclass
class _Row:
    """One row of a scoring batch: its tokens (and position ids and segments when packed) and what it reads.

    reads: for each item scored in this row, (item index, columns whose next-token log-probs are read, the
    target token at each). A packed row holds one prompt followed by several of its responses; segment 0 is the
    prompt and segment j the j-th response, which sees the prompt and itself but not the other responses."""

    ids: list[int]
    reads: list[tuple[int, list[int], list[int]]]
    pos: list[int] | None = None
    seg: list[int] | None = None

    @property
    def packed(self) -> bool:
        return self.seg is not None


def _single_row(i: int, ids: list[int], n_resp: int) -> _Row:
    end = len(ids) - 1  # predictions for tokens 1..len-1 live at positions 0..len-2
    cols = list(range(end - n_resp, end))
    return _Row(ids, [(i, cols, [ids[c + 1] for c in cols])])


def _packed_row(prompt: list[int], members: list[tuple[int, list[int]]]) -> _Row:
    ids, pos, seg, reads = list(prompt), list(range(len(prompt))), [0] * len(prompt), []
    for j, (i, r) in enumerate(members, start=1):
        start = len(ids)
        cols = [len(prompt) - 1] + list(range(start, start + len(r) - 1))  # first token: read at the prompt's end
        ids += r
        pos += range(len(prompt), len(prompt) + len(r))
        seg += [j] * len(r)
        reads.append((i, cols, list(r)))
    return _Row(ids, reads, pos, seg)


# A packed row takes responses while it stays within this many tokens (and max_length). Longer rows save more
# prompt tokens but pay more attention per token (quadratic in the row length, with a 4-D mask): measured on the
# discrimination pairs (16 pairs, 1 thread, Intel VM), packed rows of 763-962 tokens (up to 6 responses) cost 2.0
# ms per token vs 1.5-1.7 ms in rows of 150-390, which cancelled the saving (benchmarks/RESULTS.md, "Fifth VM").
PACK_MAX_TOKENS = 512


def _rows(
    prompt_ids: list[list[int]],
    resp_ids: list[list[int]],
    max_length: int,
    share: bool,
    pack_max: int = PACK_MAX_TOKENS,
) -> list[_Row]:
    """Scoring rows for items (prompt tokens, response tokens): items that share a prompt are packed into one
    row (prompt once, then their responses) while the row fits min(max_length, pack_max); the rest get a row
    each, cut from the left of the prompt to max_length."""
    limit = min(max_length, pack_max)
    rows: list[_Row] = []
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p, r) in enumerate(zip(prompt_ids, resp_ids)):
        fits = len(p) + len(r) <= max_length and len(p) > 0 and len(r) > 0
        if share and fits:
            groups.setdefault(tuple(p), []).append(i)
        else:
            ids = (p + r)[-max_length:]
            rows.append(_single_row(i, ids, min(len(r), len(ids) - 1)))
    for p, members in groups.items():
        chunk: list[tuple[int, list[int]]] = []
        for i in members + [None]:
            r = resp_ids[i] if i is not None else None
            if chunk and (i is None or len(p) + sum(len(x) for _, x in chunk) + len(r) > limit):
                if len(chunk) == 1:
                    ((j, x),) = chunk
                    rows.append(_single_row(j, list(p) + x, len(x)))
                else:
                    rows.append(_packed_row(list(p), chunk))
                chunk = []
            if i is not None:
                chunk.append((i, r))
    return rows


def _row_batches(rows: list[_Row], batch_size: int):
    """Rows longest first, in batches of at most batch_size scored items (a packed row counts each response)."""
    batch: list[_Row] = []
    n = 0
    for row in sorted(rows, key=lambda r: -len(r.ids)):
        if batch and n + len(row.reads) > batch_size:
            yield batch
            batch, n = [], 0
        batch.append(row)
        n += len(row.reads)
    if batch:
        yield batch


def _score_rows(score: "_Scorer", rows: list[_Row], pad: int, device, dtype) -> list[list[torch.Tensor]]:
    """One forward over a right-padded batch of rows: for each row, the token log-probs of each item it reads.

    A batch without packed rows uses the plain (ids, attention mask) forward; one with packed rows passes each
    row's position ids and a 4-D additive mask (causal, and a response sees only the prompt and itself)."""
    ids, mask = _right_padded([r.ids for r in rows], pad)
    position_ids = None
    if any(r.packed for r in rows):
        B, L = ids.shape
        seg = torch.full((B, L), -1, dtype=torch.long)
        position_ids = torch.zeros((B, L), dtype=torch.long)
        for b, r in enumerate(rows):
            n = len(r.ids)
            seg[b, :n] = torch.tensor(r.seg) if r.packed else 0
            position_ids[b, :n] = torch.tensor(r.pos) if r.packed else torch.arange(n)
        mask = packed_attention_mask(seg, dtype)
        position_ids = position_ids.to(device)
    rows_l, cols_l, tgt_l = [], [], []
    for b, r in enumerate(rows):
        for _, cols, tgts in r.reads:
            rows_l += [b] * len(cols)
            cols_l += cols
            tgt_l += tgts
    if not rows_l:
        return [[torch.zeros(0) for _ in r.reads] for r in rows]
    rows_t, cols_t = torch.tensor(rows_l, device=device), torch.tensor(cols_l, device=device)
    logp = score(ids.to(device), mask.to(device), rows_t, cols_t, position_ids=position_ids)
    tok_lp = logp.gather(-1, torch.tensor(tgt_l, device=device).unsqueeze(-1)).squeeze(-1).cpu()
    out, at = [], 0
    for r in rows:
        per = []
        for _, cols, _t in r.reads:
            per.append(tok_lp[at : at + len(cols)])
            at += len(cols)
        out.append(per)
    return out


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
    share_prompts: bool = True,
) -> list[tuple[float, int]]:
    """(sum of log p(response token | prefix), number of response tokens) for each (prompt, response).

    Prompts are already-templated strings; the response is tokenized separately and appended, so the
    split between prompt and response tokens is exact. Sequences longer than max_length are cut from the
    left of the prompt.

    share_prompts: responses to the same prompt (pair discrimination's chosen and rejected, multiple-choice
    options) are scored in one row that holds the prompt once, so the prompt is run through the model once
    instead of once per response (rows of at most PACK_MAX_TOKENS). The shortest packed row is first checked
    against scoring its responses one by one; a model that does not honour position ids and a 4-D attention mask
    is then scored without packing.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts vs {len(responses)} responses")
    device = next(model.parameters()).device
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    dtype = emb.weight.dtype if emb is not None and emb.weight.is_floating_point() else torch.float32
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cache: dict[str, list[int]] = {}
    prompt_ids = [cache.setdefault(p, tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    resp_ids = [tokenizer(r, add_special_tokens=False).input_ids for r in responses]
    rows = _rows(prompt_ids, resp_ids, max_length, share_prompts)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(prompts)
    score = _Scorer(model)

    def keep(batch, got):
        for r, per in zip(batch, got):
            for (i, cols, _t), lp in zip(r.reads, per):
                out[i] = (float(lp.double().sum()) if len(cols) else 0.0, len(cols))
            pbar.update(len(r.reads))

    with _scoring(model, len(prompts), progress=progress, desc=desc) as pbar:
        packed = [r for r in rows if r.packed]
        if packed:
            # first, the shortest packed row against its responses scored one by one (cheap: about three rows)
            probe = min(packed, key=lambda r: len(r.ids))
            got = _score_rows(score, [probe], pad, device, dtype)
            alone = _rows(
                [prompt_ids[i] for i, _, _ in probe.reads], [resp_ids[i] for i, _, _ in probe.reads], max_length, False
            )
            ref = [lp for per in _score_rows(score, alone, pad, device, dtype) for lp in per]
            if not all(torch.allclose(a, c, atol=1e-4, rtol=1e-4) for a, c in zip(got[0], ref)):
                pbar.close()
                return response_logprobs(
                    model,
                    tokenizer,
                    prompts,
                    responses,
                    batch_size=batch_size,
                    max_length=max_length,
                    progress=progress,
                    desc=desc,
                    share_prompts=False,
                )
            keep([probe], got)
            rows = [r for r in rows if r is not probe]
        for batch in _row_batches(rows, batch_size):
            keep(batch, _score_rows(score, batch, pad, device, dtype))
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
