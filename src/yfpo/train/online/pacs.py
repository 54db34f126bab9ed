"""PACS: implicit actor-critic coupling via a supervised learning framework (Li et al. 2025, arXiv 2509.02522;
code ritzz-ai/PACS @ bbe1dc6, src/pacs/pacs_core_algos.py `compute_pacs_loss`, run by scripts/pacs/pacs_beta_1.0.sh).

The outcome reward y in {0, 1} of completion i is treated as a label, predicted by a score of the policy:

    r_i   = beta * sum_t (log pi_theta(o_it | q, o_i<t) - log pi_old(o_it | q, o_i<t))       (`compute_reward`, "1")
    psi_i = r_i - 1/(G-1) sum_{j != i, same question} r_j                   (`compute_rloo_outcome_advantage`)
            (or (r_i - mean_g r) / (std_g r + 1e-6), `compute_grpo_outcome_advantage`)
    L     = 1/N sum_i w_i * BCE(sigmoid(psi_i), y_i)                   (torch.nn.BCEWithLogitsLoss(weight=w))

with w_i the sklearn "balanced" class weight of y_i within its question's G completions,
N_g / (2 * #{j in g: y_j = y_i}), in a group that holds both labels, and 1 otherwise (`compute_weight`, mode
"question"). pi_old is the policy that sampled the batch (the repository recomputes `old_log_probs` with the actor
before the update; TRL's `old_per_token_logps`, or the detached current log-probs when the update is on-policy). The
paper's Sec. 3 shows dL/dtheta = -sum_i w_i (y_i - sigmoid(psi_i)) d psi_i/d theta: a policy gradient whose
"advantage" (y - sigmoid(psi)) is the error of the critic that the same network implicitly is.

One deliberate difference: the repository sums the log-ratio over the whole padded response; here padding positions
are masked out (`mask`), since they are not part of the completion (their log-ratio is 0 at the first update anyway).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yfpo.train.online.groups import group_count, group_sum, grpo_advantage, rloo_advantage


def pacs_scores(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_i = beta * sum_t mask_it (logp_it - old_logp_it); logps, old_logps, mask (B, T) -> (B,)."""
    return beta * ((logps - old_logps) * mask).sum(-1)


def balanced_weights(labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """sklearn compute_class_weight("balanced") within each group: n_g / (2 * count of the element's class in g)
    where the group holds both classes, else 1 (PACS `compute_weight`, mode "question")."""
    pos = (labels > 0.5).to(torch.float32)
    n = group_count(groups).to(torch.float32)
    k_pos = group_sum(pos, groups)
    k_same = torch.where(pos > 0, k_pos, n - k_pos)
    mixed = (k_pos > 0) & (k_pos < n)
    return torch.where(mixed, n / (2 * k_same), torch.ones_like(n))


def pacs_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    beta: float = 1.0,
    adv: str = "rloo",
    weight: str = "question",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PACS loss of one micro-batch that holds whole groups; returns (loss, {score, psi, weight}) for logging."""
    r = pacs_scores(logps, old_logps, mask, beta)
    if adv == "rloo":
        psi = rloo_advantage(r, groups)
    elif adv == "grpo":
        psi = grpo_advantage(r, groups)
    else:
        raise ValueError(f"pacs adv {adv!r}: expected rloo or grpo")
    y = labels.to(psi.dtype)
    if weight == "question":
        w = balanced_weights(y, groups).to(psi.dtype)
    elif weight == "none":
        w = torch.ones_like(psi)
    else:
        raise ValueError(f"pacs weight {weight!r}: expected question or none")
    loss = F.binary_cross_entropy_with_logits(psi, y, weight=w)
    return loss, {"score": r.detach(), "psi": psi.detach(), "weight": w}
