"""FDT (Focused Differentiation Training) as one autograd function for the LM head (SPEC section 4).

With last-layer hidden states h_w, h_l at aligned response positions, FDT computes log-probs from
z_c = z_d + sg(z - z_d), z_d = W h_c, h_c(w) = h_w - sg(h_l), h_c(l) = h_l - sg(h_w). The forward value is
the plain z = W h, so the loss value is unchanged. Gradients:
  * wrt W: g h_c^T, i.e. dW[y] = (c_w - c_l)(h_w - h_l)^T summed over aligned positions (the paper's eq. 8);
  * wrt h: W^T g, the plain hidden-state gradient (h_c depends on h with identity Jacobian, the partner is sg).
`FDTLogProbs` computes per-token log p(label) in chunks of positions, never the full (positions x vocab)
logits at once, and recomputes each chunk's logits in backward (as TRL's fused head does).
Positions beyond the shorter response are paired with a zero vector (the shorter one is padded), so
there h_c = h and the gradient is the plain one.
`add_fdt_head` patches the model's forward (like TRL's fused head) so the trainer calls FDT *through* the model
and its wrappers: DDP only all-reduces gradients of forwards run through it (calling the backbone directly
left 2-process gradients unsynchronised).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

CHUNK = 512


class FDTLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, partner, chunk: int = CHUNK):
        # hidden (N, D) with grad; weight (V, D); bias (V,) or None; labels (N,); partner (N, D) (no grad)
        out = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        for s in range(0, hidden.shape[0], chunk):
            z = hidden[s : s + chunk].float() @ weight.float().t()
            if bias is not None:
                z = z + bias.float()
            out[s : s + chunk] = z.gather(-1, labels[s : s + chunk, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), labels, partner)
        ctx.has_bias = bias is not None
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, labels, partner = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        chunk = ctx.chunk
        gh = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        gb = torch.zeros_like(bias, dtype=torch.float32) if bias is not None and ctx.needs_input_grad[2] else None
        wf = weight.float()
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s : s + chunk].float()
            z = h @ wf.t()
            if bias is not None:
                z = z + bias.float()
            g = -torch.softmax(z, dim=-1)  # d logp / dz = onehot(y) - p
            g.scatter_add_(-1, labels[s : s + chunk, None], torch.ones_like(labels[s : s + chunk, None], dtype=g.dtype))
            g = g * grad_out[s : s + chunk, None].float()
            if gh is not None:
                gh[s : s + chunk] = (g @ wf).to(gh.dtype)
            if gw is not None:
                hc = h - partner[s : s + chunk].float()  # the FDT weight-gradient input
                gw += g.t() @ hc
            if gb is not None:
                gb += g.sum(0)
        return (
            gh,
            (gw.to(weight.dtype) if gw is not None else None),
            (gb.to(bias.dtype) if gb is not None else None),
            None,
            None,
            None,
        )


def aligned_partner(hidden: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """For a stacked [chosen; rejected] batch, the hidden state of the aligned partner response token.

    hidden (2B, T, D), completion_mask (2B, T) over the *same* positions. The k-th response token of
    chosen i is paired with the k-th response token of rejected i (and vice versa); tokens past the
    other's length get a zero partner. Returns a detached (2B, T, D) tensor (zeros off-response).
    """
    B2, T, D = hidden.shape
    B = B2 // 2
    h = hidden.detach()
    mask = completion_mask.bool()
    partner = torch.zeros_like(h)
    for i in range(B):
        for a, b in ((i, i + B), (i + B, i)):
            pa = mask[a].nonzero().flatten()
            pb = mask[b].nonzero().flatten()
            k = min(len(pa), len(pb))
            if k:
                partner[a, pa[:k]] = h[b, pb[:k]]
    return partner


def fdt_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    completion_mask_shifted: torch.Tensor,
    chunk: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """Per-token log-probs (2B, T-1) with FDT gradients, from backbone hidden states (2B, T, D).

    labels (2B, T-1) are the next tokens (-100 off-response), completion_mask_shifted (2B, T-1) marks the
    positions whose next token is a response token; these are the aligned positions. At most `chunk`
    (default CHUNK) positions' full-vocabulary logits exist at once.
    """
    h = hidden[:, :-1]
    partner = aligned_partner(h, completion_mask_shifted)
    valid = labels != -100
    flat_h = h[valid]
    lp = FDTLogProbs.apply(flat_h, weight, bias, labels[valid], partner[valid], chunk or CHUNK)
    out = lp.new_zeros(labels.shape).masked_scatter(valid, lp)
    with torch.no_grad():
        diff = (h - partner)[valid & (partner.abs().sum(-1) > 0)]
        diag = {
            "fdt/aligned_tokens": float(diff.shape[0]),
            "fdt/hidden_diff_norm": float(diff.norm(dim=-1).mean()) if diff.numel() else 0.0,
        }
    return out, diag


@dataclass
class FDTOutput(ModelOutput):
    """What a model patched by `add_fdt_head` returns when called with `fdt_labels=`."""

    log_probs: torch.Tensor | None = None  # (B, T-1), zero where the label is -100
    aligned_tokens: torch.Tensor | None = None
    hidden_diff_norm: torch.Tensor | None = None


def check_fdt_supported(model: torch.nn.Module) -> None:
    """FDT recomputes the LM head itself: refuse heads whose logits are not plain W h + b."""
    from yfpo.models import arch

    causal = arch.unwrap(model)
    tc = causal.config.get_text_config() if hasattr(causal.config, "get_text_config") else causal.config
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        v = getattr(tc, key, None)
        if v is not None and v != 1.0:
            raise NotImplementedError(
                f"FDT: the model's config sets {key}={v}; FDT supports plain LM heads (logits = W h + b)"
            )
    head = causal.get_output_embeddings()
    if hasattr(head, "lora_A") or hasattr(head, "modules_to_save") or not isinstance(head, torch.nn.Linear):
        raise NotImplementedError(
            "FDT: the LM head is wrapped (LoRA / modules_to_save on lm_head); FDT needs a plain "
            "nn.Linear head; leave lm_head out of lora_targets"
        )


def add_fdt_head(causal: torch.nn.Module) -> None:
    """Patch `causal.forward`: called with `fdt_labels=LABELS` it runs the backbone and returns FDTOutput with FDT
    log-probs; otherwise it is the previous forward. Calling through the model (not its backbone) keeps wrappers
    such as DDP, which sync gradients only for forwards run through them, in the loop."""
    if getattr(causal, "_yfpo_fdt_head", False):
        return
    previous = causal.forward

    @functools.wraps(previous)
    def forward(*args, fdt_labels=None, **kwargs):
        if fdt_labels is None:
            return previous(*args, **kwargs)
        for k in ("labels", "fused_lm_head", "num_items_in_batch"):
            kwargs.pop(k, None)
        kwargs["use_cache"] = False
        hidden = getattr(causal, causal.base_model_prefix)(*args, **kwargs).last_hidden_state
        head = causal.get_output_embeddings()
        labels = fdt_labels[:, 1:].to(head.weight.device)
        lp, diag = fdt_token_logps(hidden.to(head.weight.device), head.weight, head.bias, labels, labels != -100)
        return FDTOutput(
            log_probs=lp,
            aligned_tokens=torch.tensor(diag["fdt/aligned_tokens"]),
            hidden_diff_norm=torch.tensor(diag["fdt/hidden_diff_norm"]),
        )

    causal.forward = forward
    causal._yfpo_fdt_head = True
