"""MERCI: count-based intrinsic rewards for LLM reasoning (Zhang et al. 2025, "Count Counts", arXiv 2510.16614; the
code at github.com/dd88s87/MERCI could not be read here, so this follows the paper's description and the Coin
Flipping Network it builds on: Lobel et al. 2023, "Flipping Coins to Estimate Pseudocounts for Exploration in
Reinforcement Learning", ICML, Sec. 3-4).

Coin flipping: every visit of a state s is stored with a fresh vector of d fair coin flips c in {-1, +1}^d, and a
network f is regressed onto them (MSE). At the optimum f(s) is the mean of the n(s) flip vectors stored for s, so
E[f_k(s)^2] = 1/n(s) for every coordinate k and

    bonus(s) = sqrt(1/d * sum_k f_k(s)^2)  ~  1/sqrt(n(s))                                    (CFN, Lobel Eq. 4-5)

MERCI's observation: in token generation the transitions are deterministic and known, so the Uncertainty Bellman
Equation reduces to accumulating the local (reward) uncertainty along the trajectory; its intrinsic reward of a
completion o = (o_1..o_T) of question q is the pseudo-count bonus of its states s_t = (q, o_<=t) accumulated over t,

    r_int(q, o) = sum_t bonus(s_t)        (`merci_aggregate: sum`; `mean` divides by T)

added to the task reward inside GRPO (here through TRL's reward_weights: r = accuracy_weight * r_acc +
merci_weight * r_int, then TRL's group-relative advantage). The CFN is trained online: the reward of a batch is
computed before the batch's states enter the replay buffer, then `updates` minibatch steps are taken.

Substitute, named as such: MERCI's CFN is a network initialised from the same SFT checkpoint as the policy. Here the
state representation is the frozen base model's last hidden state at each completion token (the LoRA adapters off:
pi_0's features, so counts do not drift with the policy) or, `merci_features: neurons`, the NeuronSet's standardised
activations; f is a small MLP on top. Its weights, optimiser, replay buffer and random generator are saved with every
checkpoint, so a resumed run continues exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cfn_bonus(f: torch.Tensor) -> torch.Tensor:
    """sqrt(mean_k f_k^2) over the last dimension: the CFN estimate of 1/sqrt(n(s))."""
    return f.float().pow(2).mean(-1).sqrt()


def cfn_loss(f: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The CFN regression loss: mean over states and coins of (f_k(s) - c_k)^2."""
    return F.mse_loss(f.float(), flips.float())


def trajectory_reward(bonus: torch.Tensor, mask: torch.Tensor, aggregate: str = "sum") -> torch.Tensor:
    """r_int per completion: sum (or mean) over its tokens of the per-state bonus; bonus, mask (B, T) -> (B,)."""
    m = mask.to(bonus.dtype)
    total = (bonus * m).sum(-1)
    if aggregate == "sum":
        return total
    if aggregate == "mean":
        return total / m.sum(-1).clamp(min=1)
    raise ValueError(f"merci aggregate {aggregate!r}: expected sum or mean")


class CoinFlippingNetwork(torch.nn.Module):
    """f: features -> R^d (a two-layer MLP on layer-normalised features), with its replay buffer of (state, flips)
    and its own seeded generator; `state()` / `load()` round-trip everything a resumed run needs."""

    def __init__(
        self,
        dim: int,
        coins: int = 32,
        hidden: int = 128,
        lr: float = 1e-3,
        buffer: int = 20000,
        batch: int = 256,
        updates: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        self.dim, self.coins, self.capacity, self.batch, self.updates = dim, coins, buffer, batch, updates
        self.gen = torch.Generator().manual_seed(seed)
        init = torch.Generator().manual_seed(seed + 1)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, coins))
        with torch.no_grad():
            for p in self.net.parameters():  # seeded init, independent of the global RNG
                p.copy_(torch.empty_like(p).uniform_(-1, 1, generator=init) / p.shape[-1] ** 0.5)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.feats = torch.zeros(0, dim)
        self.flips = torch.zeros(0, coins)
        self.ptr = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.net(F.layer_norm(x, x.shape[-1:]))

    @torch.no_grad()
    def bonus(self, x: torch.Tensor) -> torch.Tensor:
        return cfn_bonus(self(x))

    def add(self, x: torch.Tensor) -> None:
        """Store states (N, dim), each with fresh coin flips, in the ring buffer."""
        x = x.detach().float().cpu()
        c = torch.randint(0, 2, (x.shape[0], self.coins), generator=self.gen).float() * 2 - 1
        for xs, cs in ((x[i : i + self.capacity], c[i : i + self.capacity]) for i in range(0, len(x), self.capacity)):
            if len(self.feats) < self.capacity:
                room = self.capacity - len(self.feats)
                self.feats = torch.cat([self.feats, xs[:room]])
                self.flips = torch.cat([self.flips, cs[:room]])
                xs, cs = xs[room:], cs[room:]
            for i in range(len(xs)):  # overwrite the oldest
                self.feats[self.ptr], self.flips[self.ptr] = xs[i], cs[i]
                self.ptr = (self.ptr + 1) % self.capacity

    def train_steps(self) -> float:
        """`updates` Adam steps on minibatches drawn (seeded) from the buffer; returns the last loss."""
        loss = torch.zeros(())
        for _ in range(self.updates):
            idx = torch.randint(0, len(self.feats), (min(self.batch, len(self.feats)),), generator=self.gen)
            self.opt.zero_grad(set_to_none=True)
            loss = cfn_loss(self(self.feats[idx]), self.flips[idx])
            loss.backward()
            self.opt.step()
        return loss.item()

    def state(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "feats": self.feats,
            "flips": self.flips,
            "ptr": self.ptr,
            "gen": self.gen.get_state(),
        }

    def load(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.feats, self.flips, self.ptr = state["feats"], state["flips"], int(state["ptr"])
        self.gen.set_state(state["gen"])
