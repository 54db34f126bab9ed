"""Prompt sharing: several continuations of one prompt in one row, the prompt run once.

A packed row is [prompt, continuation 1, continuation 2, ...]; each token carries a segment (0 for the prompt, j for
the j-th continuation, -1 for padding) and a position id (a continuation's positions restart where the prompt ends,
so each continuation sees exactly the positions it would see alone). The 4-D additive mask lets a token attend to
the tokens before it in the prompt and in its own segment only. For a model that honours position ids and a 4-D
mask (transformers' sdpa and eager attention) the result is the same as scoring each continuation in its own row,
up to float rounding, at the cost of the prompt once instead of once per continuation.

Used by teacher-forced scoring (yfpo.eval.loglik: pair discrimination, multiple-choice options) and by the DPO
policy and reference forwards (`pack_pairs` / `run_packed`: chosen and rejected of a pair share the prompt; the
backbone runs on packed rows and its hidden states are gathered back into TRL's two-rows-per-pair layout, so the LM
head, FDT and the loss see exactly the tensors they see without packing).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PACKABLE_ATTENTION = ("sdpa", "eager")


def packed_attention_mask(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) additive mask for segments `seg` (B, L): causal; the prompt (0) and a token's own segment are
    visible; padding (-1) sees only itself, so no softmax row is empty."""
    L = seg.shape[1]
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)
    allowed = torch.ones((L, L), dtype=torch.bool, device=seg.device).tril() & (k >= 0) & (q >= 0)
    allowed &= (k == 0) | (k == q)
    allowed |= torch.eye(L, dtype=torch.bool, device=seg.device) & (q < 0)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


@dataclass
class PairPack:
    """Chosen and rejected rows of B pairs (TRL layout: rows 0..B-1 chosen, B..2B-1 rejected, right-padded) packed
    into B rows. `src_row`/`src_col` (2B, L): where each position of the original layout lives in the packed one."""

    input_ids: torch.Tensor  # (B, Lp)
    attention_mask: torch.Tensor  # (B, 1, Lp, Lp), additive
    position_ids: torch.Tensor  # (B, Lp)
    src_row: torch.Tensor
    src_col: torch.Tensor
    saved_positions: int  # positions the packed rows do not run (prompt tokens run once instead of twice)

    def unpack(self, t: torch.Tensor) -> torch.Tensor:
        """(B, Lp, ...) packed -> (2B, L, ...) in the original layout (a gather: gradients of the shared prompt
        positions add up, as they would over two rows). Padding positions get some valid position's value."""
        return t[self.src_row.to(t.device), self.src_col.to(t.device)]


def pack_pairs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor, dtype: torch.dtype
) -> PairPack | None:
    """A PairPack for TRL's DPO batch, or None when it cannot be packed exactly: a row not right-padded, a pair
    whose two rows do not start with the same prompt tokens (e.g. keep_end truncation cut them differently), or an
    empty prompt."""
    n, L = input_ids.shape
    if n % 2 or n == 0:
        return None
    B = n // 2
    att = attention_mask.bool().cpu()
    comp = completion_mask.bool().cpu()
    ids = input_ids.cpu()
    lens = att.sum(1)
    if not all(bool(att[i, : lens[i]].all()) for i in range(n)):
        return None  # not right-padded
    starts = []
    for i in range(n):
        nz = comp[i].nonzero()
        starts.append(int(nz[0]) if len(nz) else int(lens[i]))
    rows, pos, segs = [], [], []
    src_row = torch.zeros((n, L), dtype=torch.long)
    src_col = torch.zeros((n, L), dtype=torch.long)
    for b in range(B):
        c, r = b, B + b
        p, lc, lr = starts[c], int(lens[c]), int(lens[r])
        if p == 0 or starts[r] != p or not torch.equal(ids[c, :p], ids[r, :p]):
            return None
        rows.append(torch.cat([ids[c, :lc], ids[r, p:lr]]))
        pos.append(torch.cat([torch.arange(lc), torch.arange(p, lr)]))
        segs.append(torch.tensor([0] * p + [1] * (lc - p) + [2] * (lr - p)))
        src_row[c], src_row[r] = b, b
        src_col[c, :lc] = torch.arange(lc)
        src_col[r, :p] = torch.arange(p)
        src_col[r, p:lr] = torch.arange(lc, lc + lr - p)
    Lp = max(len(x) for x in rows)
    packed = torch.zeros((B, Lp), dtype=ids.dtype)
    position_ids = torch.zeros((B, Lp), dtype=torch.long)
    seg = torch.full((B, Lp), -1, dtype=torch.long)
    for b, (x, ps, sg) in enumerate(zip(rows, pos, segs)):
        packed[b, : len(x)], position_ids[b, : len(x)], seg[b, : len(x)] = x, ps, sg
    dev = input_ids.device
    return PairPack(
        input_ids=packed.to(dev),
        attention_mask=packed_attention_mask(seg, dtype).to(dev),
        position_ids=position_ids.to(dev),
        src_row=src_row,
        src_col=src_col,
        saved_positions=sum(starts[:B]),
    )


def backbone_of(causal: torch.nn.Module) -> torch.nn.Module | None:
    """The decoder stack a causal LM's forward calls (`model.model` for Llama-style models), or None."""
    prefix = getattr(causal, "base_model_prefix", "")
    inner = getattr(causal, prefix, None) if prefix else None
    return inner if isinstance(inner, torch.nn.Module) and inner is not causal else None


@contextlib.contextmanager
def run_packed(backbone: torch.nn.Module, pack: PairPack):
    """Inside the block, the backbone's next forward runs on `pack`'s rows (its input_ids / attention_mask /
    position_ids keywords replaced) and returns its last hidden states unpacked to the caller's layout."""

    def pre(module, args, kwargs):
        if args or kwargs.get("inputs_embeds") is not None:
            raise RuntimeError("prompt packing: the backbone was called without input_ids keywords")
        kwargs = dict(kwargs, input_ids=pack.input_ids, attention_mask=pack.attention_mask)
        kwargs["position_ids"] = pack.position_ids
        return args, kwargs

    def post(module, args, kwargs, output):
        output.last_hidden_state = pack.unpack(output.last_hidden_state)
        return output

    handles = [
        backbone.register_forward_pre_hook(pre, with_kwargs=True),
        backbone.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
