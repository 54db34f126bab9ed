"""How much of the preference signal the neuron term carries: neuron/logit_share (every step) and
neuron/grad_share (every grad_share_steps optimizer steps; two extra backward passes each).

    logit_share = |gamma m'| / (|beta delta'| + |gamma m'|)       per pair, delta' as the loss type reads it
    grad_share  = ||g_neuron|| / (||g_pref|| + ||g_neuron||)      the loss gradient split by the chain rule into
                                                                   the path through the log-ratios (neuron term
                                                                   held fixed) and the path through the margin
"""

from __future__ import annotations

import torch

from yfpo.train.losses import combined_loss, preference_type


def norm(grads) -> float:
    """The L2 norm of a gradient list (None entries skipped)."""
    return float(torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads if g is not None)))


def normalised_delta(loss_type, chosen_lr, rejected_lr, chosen_mask, rejected_mask):
    """The log-ratio margin a loss type reads (per token for ipo / sigmoid_norm)."""
    if loss_type in ("ipo", "sigmoid_norm"):
        return chosen_lr / chosen_mask.sum(1).clamp(min=1) - rejected_lr / rejected_mask.sum(1).clamp(min=1)
    return chosen_lr - rejected_lr


def logit_share(loss_types, beta, neuron_abs, chosen_lr, rejected_lr, chosen_mask, rejected_mask) -> torch.Tensor:
    """Per pair |gamma m'| / (|beta delta'| + |gamma m'|) (detached)."""
    logit = beta * normalised_delta(preference_type(loss_types), chosen_lr, rejected_lr, chosen_mask, rejected_mask)
    return (neuron_abs / (logit.abs() + neuron_abs).clamp(min=1e-12)).detach()


def grad_share_due(cfg, global_step: int, processes: int) -> bool:
    """Whether this optimizer step logs grad_share (grad_share None: on with LoRA; never under DDP or no_grad)."""
    on = cfg.grad_share if cfg.grad_share is not None else cfg.lora
    if not on or not torch.is_grad_enabled() or processes > 1:
        return False
    return global_step % cfg.grad_share_steps == 0  # validated >= 1 by TrainConfig


def grad_share(model, loss_types, loss_weights, beta, lam, chosen_lr, rejected_lr, neuron, aux, loss_kw) -> float:
    """||g_neuron|| / (||g_pref|| + ||g_neuron||) over the trainable parameters (the graph is kept)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # g_pref: every loss term but the neuron path (an sft term included); g_neur: through the neuron margin only
    if aux is not None:
        g_pref = combined_loss(loss_types, loss_weights, chosen_lr, rejected_lr, beta, **loss_kw)
        g_neur = lam * aux
    else:
        g_pref = combined_loss(
            loss_types, loss_weights, chosen_lr, rejected_lr, beta, neuron=neuron.detach(), **loss_kw
        )
        fixed = {**loss_kw, "sft_loss": None if loss_kw.get("sft_loss") is None else loss_kw["sft_loss"].detach()}
        g_neur = combined_loss(
            loss_types, loss_weights, chosen_lr.detach(), rejected_lr.detach(), beta, neuron=neuron, **fixed
        )
    gp = norm(torch.autograd.grad(g_pref, params, retain_graph=True, allow_unused=True))
    gn = norm(torch.autograd.grad(g_neur, params, retain_graph=True, allow_unused=True))
    return gn / max(gp + gn, 1e-30)
