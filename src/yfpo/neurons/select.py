"""Selecting neurons from per-neuron score grids: pure tensor functions."""

from __future__ import annotations

import torch


def math_score(math: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Math score per neuron: mean math statistic minus mean contrast statistic, (L, W)."""
    if math.shape != contrast.shape:
        raise ValueError(f"math_score: math grid {tuple(math.shape)} and contrast grid {tuple(contrast.shape)} differ")
    return math.float() - contrast.float()


def resolve_k(k: float, total: int) -> int:
    """k as a count (k >= 1, integral) or a fraction of `total` (0 < k < 1)."""
    if k <= 0:
        raise ValueError(f"k must be > 0 (a count >= 1 or a fraction in (0, 1)), got {k}")
    if k < 1:
        return max(1, int(round(k * total)))
    if k != int(k):
        raise ValueError(f"k >= 1 is a count and must be a whole number, got {k}")
    if k > total:
        raise ValueError(f"k = {int(k)} is more than the {total} neurons available")
    return int(k)


def select_top(score: torch.Tensor, k: float, mode: str = "global") -> tuple[torch.Tensor, torch.Tensor]:
    """(layers, indices) of the top-k scores (descending); mode "global" over the whole (L, W) grid,
    or "per_layer" with k (count or fraction of the width) in every layer."""
    L, W = score.shape
    if mode == "global":
        n = resolve_k(k, L * W)
        top = torch.topk(score.flatten(), n).indices
        return top // W, top % W
    if mode == "per_layer":
        n = resolve_k(k, W)
        idx = torch.topk(score, n, dim=1).indices  # (L, n)
        layers = torch.arange(L).unsqueeze(1).expand(L, n)
        order = torch.argsort(score[layers, idx].flatten(), descending=True)
        return layers.flatten()[order], idx.flatten()[order]
    raise ValueError(f"selection mode must be 'global' or 'per_layer', got {mode!r}")


def select_random(counts: list[int], width: int, seed: int, exclude: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random neurons with `counts[l]` in layer l (seeded); `exclude` = (layers, indices) never drawn."""
    g = torch.Generator().manual_seed(int(seed))
    layers, indices = [], []
    for l, c in enumerate(counts):
        if c == 0:
            continue
        pool = torch.ones(width, dtype=torch.bool)
        if exclude is not None:
            pool[exclude[1][exclude[0] == l]] = False
        cand = pool.nonzero().flatten()
        if c > len(cand):
            raise ValueError(f"select_random: layer {l} needs {c} neurons, only {len(cand)} available")
        pick = cand[torch.randperm(len(cand), generator=g)[:c]]
        layers.append(torch.full((c,), l, dtype=torch.long))
        indices.append(pick.sort().values)
    return torch.cat(layers), torch.cat(indices)
