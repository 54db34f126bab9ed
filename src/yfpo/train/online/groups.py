"""Per-group statistics over group ids (TRL shuffles a generation batch, so a group is not a contiguous block)."""

from __future__ import annotations

import torch


def group_sum(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sum of `values` over each element's group, broadcast back to the elements: out_i = sum_{j: g_j = g_i} v_j."""
    same = (groups[:, None] == groups[None, :]).to(values.dtype)
    return same @ values


def group_count(groups: torch.Tensor) -> torch.Tensor:
    return (groups[:, None] == groups[None, :]).sum(1)


def rloo_advantage(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline: A_i = v_i - (sum_{j in g(i), j != i} v_j) / (n_g - 1) (PACS
    `compute_rloo_outcome_advantage`, OREAL `reward_shaping_type == "rloo"`). Groups of one give A = 0."""
    n = group_count(groups).to(values.dtype)
    others = (group_sum(values, groups) - values) / (n - 1).clamp(min=1)
    return torch.where(n > 1, values - others, torch.zeros_like(values))


def grpo_advantage(values: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (v_i - mean_g) / (std_g + eps), std unbiased like torch.std (PACS `compute_grpo_outcome_advantage`)."""
    n = group_count(groups).to(values.dtype)
    mean = group_sum(values, groups) / n
    var = group_sum((values - mean) ** 2, groups) / (n - 1).clamp(min=1)
    return (values - mean) / (var.sqrt() + eps)


def mixed_groups(labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """True for elements whose group holds both a positive (label > 0) and a non-positive label."""
    pos = (labels > 0).to(torch.float32)
    k = group_sum(pos, groups)
    return (k > 0) & (k < group_count(groups))
