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


def select_random(
    counts: list[int], width: int, seed: int, exclude: tuple[torch.Tensor, torch.Tensor] | None = None
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


# ---------------------------------------------------------------- selection criteria (issue 12, item 2)
CRITERIA = ("diff", "tstat", "ratio", "exclude_both")


def welch_t(
    math_mean: torch.Tensor,
    math_sq_mean: torch.Tensor,
    n_math: int,
    contrast_mean: torch.Tensor,
    contrast_sq_mean: torch.Tensor,
    n_contrast: int,
) -> torch.Tensor:
    """Per-neuron Welch t-statistic of (math - contrast) normalised relevance, from per-corpus means and
    means of squares over samples (unbiased variances; a neuron with zero variance on both gets t = 0)."""
    if n_math < 2 or n_contrast < 2:
        raise ValueError(f"welch_t: needs >= 2 samples per corpus, got n_math={n_math}, n_contrast={n_contrast}")
    mm, mc = math_mean.double(), contrast_mean.double()
    vm = (math_sq_mean.double() - mm * mm).clamp_min(0) * n_math / (n_math - 1)
    vc = (contrast_sq_mean.double() - mc * mc).clamp_min(0) * n_contrast / (n_contrast - 1)
    se = (vm / n_math + vc / n_contrast).sqrt()
    t = torch.where(se > 0, (mm - mc) / se.clamp_min(1e-300), torch.zeros_like(se))
    return t.float()


def ratio_score(math_mean: torch.Tensor, contrast_mean: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """The difference relative to contrast relevance: (math - contrast) / (|contrast| + eps). eps defaults to
    the median |contrast| over all neurons, so a neuron weak on both corpora cannot score high by dividing by ~0."""
    mm, mc = math_mean.float(), contrast_mean.float()
    if eps is None:
        eps = float(mc.abs().median())
    if eps <= 0:
        eps = 1e-12
    return (mm - mc) / (mc.abs() + eps)


def strong_on_both(math_mean: torch.Tensor, contrast_mean: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """Bool grid: |relevance| at or above the `quantile` of its own corpus's grid on BOTH corpora."""
    if not 0 < quantile < 1:
        raise ValueError(f"exclude_quantile must be in (0, 1), got {quantile}")
    am, ac = math_mean.float().abs(), contrast_mean.float().abs()
    qm = torch.quantile(am.flatten().double(), quantile).item()
    qc = torch.quantile(ac.flatten().double(), quantile).item()
    return (am >= qm) & (ac >= qc)


def criterion_score(
    criterion: str,
    math_mean: torch.Tensor,
    contrast_mean: torch.Tensor,
    *,
    math_sq_mean: torch.Tensor | None = None,
    contrast_sq_mean: torch.Tensor | None = None,
    n_math: int = 0,
    n_contrast: int = 0,
    exclude_quantile: float = 0.99,
) -> torch.Tensor:
    """Selection score grid (L, W) under `criterion`; top-k of it is the selected set.

    - ``diff``: mean math minus mean contrast (the SPEC's math score, unchanged default);
    - ``tstat``: Welch t of that difference over samples (needs the means of squares);
    - ``ratio``: (math - contrast) / (|contrast| + median |contrast|);
    - ``exclude_both``: ``diff``, with neurons strongly relevant on both corpora (``strong_on_both``) set to -inf
      so they are never selected.
    The sign of every score is the sign of ``diff`` where it is finite, so s_lj = sign(score) stays valid."""
    if criterion == "diff":
        return math_score(math_mean, contrast_mean)
    if criterion == "tstat":
        if math_sq_mean is None or contrast_sq_mean is None:
            raise ValueError("criterion 'tstat' needs the per-sample means of squared relevance of both corpora")
        return welch_t(math_mean, math_sq_mean, n_math, contrast_mean, contrast_sq_mean, n_contrast)
    if criterion == "ratio":
        return ratio_score(math_mean, contrast_mean)
    if criterion == "exclude_both":
        s = math_score(math_mean, contrast_mean)
        return s.masked_fill(strong_on_both(math_mean, contrast_mean, exclude_quantile), float("-inf"))
    raise ValueError(f"neurons criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
