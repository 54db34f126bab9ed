"""OREAL: outcome-reward RL for mathematical reasoning (Lyu et al. 2025, arXiv 2502.06781; code InternLM/OREAL @
2859cc0, train_oreal.py lines 559-845, defaults from oreal/configs/oreal_w*_tokenrm_OREAL-7B-SFT_seqlen16k.py).

With binary outcome rewards r_i in {0, 1} for the G completions of a question and A_i their leave-one-out advantage
(`reward_shaping_type = "rloo"`), the loss of a batch is

    L_pos = pos_factor / N_pos * sum_{i: r_i > 0}  A_i * sum_t w+_it * (-log pi(o_it))        (behaviour cloning on
            the positive samples of best-of-N, scaled by A_i: `pos_mult_adv = True`)
    L_neg = -neg_factor / N_neg * sum_{i: r_i <= 0} sum_t exp(log pi(o_it) - log pi_old(o_it)) * A_i * w-_it
            (policy gradient on the negatives, whose reshaped reward A_i < 0 keeps the gradient consistent with
            the positives' BC term; `negative_loss_factor = 0.5`)
    L_kl  = kl_coef / N * sum_{i, t} (exp(ref_it - logp_it) - (ref_it - logp_it) - 1)      (`kl_type = "unbias"`)

N_pos, N_neg, N: completion tokens of the positive, negative and all samples of the batch. `filter` drops groups whose
completions are all correct or all wrong (`filter_trajectory`; the w/o-token-RM config keeps them; their A is 0).

Token weights w+/w- come from OREAL's token-level reward model: per-token logits s_t, p_t = sigmoid(mean_{u<=t} s_u)
(the cumulative mean), w+_t = threshold_rescale(p_t), w-_t = threshold_rescale(1 - p_t) with
threshold_rescale(p) = clamp((p - 0.5) / 0.5, 0, 1). OREAL's token RM is a copy of the policy with a one-logit head
trained online by BCE(mean_t s_t, max(r, 0)) (`token_level_rm_loss`). We cannot afford a second full model here, so
the substitutes (`oreal_token_weights`) are named as what they are:
  - none:   w = 1 (OREAL's own configuration without the token RM, oreal_wo_tokenrm_*.py).
  - probe:  `TokenProbe`, a linear head on the frozen base model's hidden states trained online with OREAL's exact
            BCE loss: the closest substitute (same objective, a far smaller model).
  - neuron: s_t = the NeuronSet's per-token activation margin mean_k sign_k (u_tk - mu_k) / sigma_k (the summand of
            phi, SPEC section 3), standardised over the batch's completion tokens, not trained: the neuron signal
            in place of the token RM (hooks.neuron_token_scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from yfpo.train.online.groups import mixed_groups, rloo_advantage


def threshold_rescale(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """clamp((p - threshold) / (1 - threshold), 0, 1) (train_oreal.py `threshold_rescale`)."""
    return ((prob - threshold) / (1 - threshold)).clamp(0, 1)


def cumulative_mean(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_{u <= t} s_u over the completion's own tokens (B, T); positions past the completion are 0."""
    m = mask.to(scores.dtype)
    return (scores * m).cumsum(-1) / m.cumsum(-1).clamp(min=1) * m


def token_weights(
    scores: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w+, w-) from per-token reward logits: p = sigmoid(cumulative mean), rescaled above `threshold` (no grad)."""
    p = torch.sigmoid(cumulative_mean(scores.detach().float(), mask))
    return threshold_rescale(p, threshold), threshold_rescale(1 - p, threshold)


def token_rm_loss(scores: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """OREAL's token-RM objective: mean over sequences of BCE(mean_t s_t, max(r, 0))."""
    m = mask.to(scores.dtype)
    seq = (scores * m).sum(-1) / m.sum(-1).clamp(min=1)
    return F.binary_cross_entropy_with_logits(seq, rewards.clamp(min=0).to(seq.dtype))


def oreal_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    groups: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    neg_weights: torch.Tensor | None = None,
    pos_factor: float = 1.0,
    neg_factor: float = 0.5,
    pos_mult_adv: bool = True,
    kl_coef: float = 0.0,
    filter_groups: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The OREAL loss of a batch of whole groups (see the module docstring); returns (loss, parts for logging)."""
    adv = rloo_advantage(rewards.to(logps.dtype), groups)
    m = mask.to(logps.dtype)
    if filter_groups:
        m = m * mixed_groups(rewards, groups).to(m.dtype)[:, None]
    pos = (rewards > 0)[:, None].to(m.dtype)
    m_pos, m_neg = m * pos, m * (1 - pos)
    wp = torch.ones_like(logps) if pos_weights is None else pos_weights.to(logps.dtype)
    wn = torch.ones_like(logps) if neg_weights is None else neg_weights.to(logps.dtype)
    a = adv[:, None]
    bc = -logps * wp * m_pos
    if pos_mult_adv:
        bc = bc * a
    l_pos = pos_factor * bc.sum() / m_pos.sum().clamp(min=1)
    ratio = torch.exp(logps - old_logps.detach())
    l_neg = -neg_factor * (ratio * a * wn * m_neg).sum() / m_neg.sum().clamp(min=1)
    loss = l_pos + l_neg
    l_kl = logps.new_zeros(())
    if kl_coef:
        if ref_logps is None:
            raise ValueError("oreal_loss: kl_coef != 0 needs ref_logps")
        d = ref_logps - logps
        l_kl = kl_coef * ((torch.exp(d) - d - 1) * m).sum() / m.sum().clamp(min=1)
        loss = loss + l_kl
    return loss, {"pos": l_pos.detach(), "neg": l_neg.detach(), "kl": l_kl.detach(), "adv": adv.detach()}


class TokenProbe(torch.nn.Module):
    """The substitute token-level reward model: s_t = w . h_t + b on frozen hidden states h, trained online with
    OREAL's BCE objective (`token_rm_loss`) by its own Adam; saved with the run's checkpoints."""

    def __init__(self, dim: int, lr: float = 1e-3):
        super().__init__()
        self.head = torch.nn.Linear(dim, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.opt = torch.optim.Adam(self.head.parameters(), lr=lr)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.float()).squeeze(-1)

    def update(self, hidden: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = token_rm_loss(self(hidden.detach()), mask, rewards)
        loss.backward()
        self.opt.step()
        return loss.item()

    def state(self) -> dict:
        return {"head": self.head.state_dict(), "opt": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
