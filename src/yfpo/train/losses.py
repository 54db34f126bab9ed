"""Pairwise preference losses (pure tensor functions), with the YFPO neuron reward.

`pairwise_loss` reproduces TRL 1.16 DPOTrainer's loss types for the standard (reverse-KL) DPO reward,
so that with gamma = 0 training equals TRL's (tests/test_train_trl_equivalence.py pins it). The neuron
margin m (SPEC section 3) joins the implicit reward after any length normalisation: the chosen (normalised)
log-ratio gets + gamma*m/(2 beta) and the rejected one - gamma*m/(2 beta), so every loss that reads the margin
sees beta * delta' + gamma * m, exactly SPEC's `yoked` form for the sigmoid loss (delta' = the log-ratio
margin, per token for ipo / sigmoid_norm), and losses that read the two rewards separately see the same
margin split symmetrically.
Several loss types with weights (TRL's `loss_type: [sigmoid, sft]`, `loss_weights: [1.0, 1.0]`: RPO, DPO plus
an NLL term on the chosen answer) are `combined_loss`: the weighted sum of each type's batch mean, the neuron term
entering only the preference types (sft reads no logit).
If TRL grows a hook for an extra reward term, this module becomes a call to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
    "sft",
)
VARIANTS = ("yoked", "yoked_ref", "aux")


def pairwise_loss(
    loss_type: str,
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    *,
    label_smoothing: float = 0.0,
    chosen_len: torch.Tensor | None = None,
    rejected_len: torch.Tensor | None = None,
    discopop_tau: float = 0.05,
    sft_loss: torch.Tensor | None = None,
    neuron: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair loss (shape (B,)) of one TRL loss type from the policy-minus-reference log-ratios.

    `neuron` (B,) is the YFPO term gamma*m, added to each loss's logit AFTER any length normalisation, so every
    loss type sees exactly beta * delta' + gamma*m, where delta' is the (normalised, for ipo / sigmoid_norm)
    log-ratio margin. Losses that read the chosen and rejected rewards separately (nca_pair, bco_pair, sppo_hard,
    apo_zero, apo_down) get it split symmetrically, +gamma*m/2 on the chosen reward, -gamma*m/2 on the rejected.
    """
    c, r = chosen_logratios, rejected_logratios
    if loss_type in ("ipo", "sigmoid_norm"):
        c = c / chosen_len.clamp(min=1.0)
        r = r / rejected_len.clamp(min=1.0)
    if neuron is not None:
        c, r = yoke(c, r, neuron, 1.0, beta)
    return _pairwise(loss_type, c, r, beta, label_smoothing, discopop_tau, sft_loss)


def combined_loss(
    loss_types: list[str],
    loss_weights: list[float] | None,
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    *,
    neuron: torch.Tensor | None = None,
    sft_loss: torch.Tensor | None = None,
    **kw,
) -> torch.Tensor:
    """TRL's multi-loss objective (scalar): sum over loss types of weight x the batch mean of that type's per-pair
    loss (weights default to 1 each). The neuron term gamma*m acts on the preference types only: an `sft` term
    (mean NLL of the chosen tokens, sft_loss) is the same with or without it. kw: pairwise_loss's other options."""
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(loss_types)
    if len(weights) != len(loss_types):
        raise ValueError(f"{len(loss_types)} loss types ({', '.join(loss_types)}) but {len(weights)} loss weights")
    total = chosen_logratios.new_zeros(())
    for lt, w in zip(loss_types, weights):
        per_pair = pairwise_loss(
            lt,
            chosen_logratios,
            rejected_logratios,
            beta,
            neuron=None if lt == "sft" else neuron,
            sft_loss=sft_loss,
            **kw,
        )
        total = total + w * per_pair.mean()
    return total


def preference_type(loss_types: list[str]) -> str | None:
    """The first loss type that reads the preference logit (not sft): the one the neuron-share metrics describe."""
    return next((t for t in loss_types if t != "sft"), None)


def _pairwise(loss_type, chosen_logratios, rejected_logratios, beta, label_smoothing, discopop_tau, sft_loss):
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":  # inputs already length-normalised
        return (delta - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        eps = torch.tensor(label_smoothing, device=delta.device, dtype=delta.dtype)
        qw, log_qw = torch.sigmoid(beta * delta), F.logsigmoid(beta * delta)
        ql, log_ql = torch.sigmoid(-beta * delta), F.logsigmoid(-beta * delta)
        return qw * (log_qw - torch.log1p(-eps)) + ql * (log_ql - torch.log(eps))
    if loss_type == "nca_pair":
        cr, rr = beta * chosen_logratios, beta * rejected_logratios
        return -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rr)
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
    if loss_type == "sppo_hard":
        return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
    if loss_type == "apo_zero":
        return (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(beta * delta))
    if loss_type == "discopop":
        logits = beta * delta
        mod = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - mod) + torch.exp(-logits) * mod
    if loss_type == "sigmoid_norm":  # inputs already length-normalised
        return -F.logsigmoid(beta * delta)
    if loss_type == "sft":
        if sft_loss is None:
            raise ValueError("loss_type sft needs sft_loss (mean NLL of the chosen tokens)")
        return sft_loss.expand(chosen_logratios.shape[0])
    raise ValueError(f"unknown loss_type {loss_type!r}; supported: {', '.join(LOSS_TYPES)}")


def yoke(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, margin: torch.Tensor, gamma: float, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the neuron reward gamma*m to the implicit-reward margin, split symmetrically over the pair."""
    shift = gamma * margin / (2 * beta)
    return chosen_logratios + shift, rejected_logratios - shift


def aux_neuron_loss(margin: torch.Tensor, gamma: float) -> torch.Tensor:
    """SPEC's `aux` term per pair: -log sigmoid(gamma * m)."""
    return -F.logsigmoid(gamma * margin)
