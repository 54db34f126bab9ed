"""The YFPO neuron feature phi(x, y) and the hooks that capture it from the policy forward.

phi(x, y) = mean over (l, j) in N of  s_lj * mean over response tokens t of (u_ljt - mu_lj) / sigma_lj
(SPEC section 3). The activations u come from forward pre-hooks on each selected layer's down projection
(its input is the neuron vector), gathered only at the selected indices, during the same forward that
computes the log-probabilities, so the margin costs no extra forward and its gradient flows into the network.

Capture records only inside `with capture.window("policy"):` around the policy forward: calls outside that
window — the reference forward, a gradient-checkpointing recomputation during backward, generation — are
not stored, so nothing is counted twice or taken from the wrong model. (Under autograd the hook still runs the
same gather outside a window, because non-reentrant checkpointing requires the recomputation to save the same
tensors as the original forward; reentrant checkpointing would cut the neuron margin's gradient and is refused.)
"""

from __future__ import annotations

import contextlib

import torch

from yfpo.models import arch
from yfpo.neurons.neuronset import NeuronSet


def phi_from_acts(
    acts: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, signs: torch.Tensor
) -> torch.Tensor:
    """phi per sequence. acts (B, T, K) at the selected neurons; mask (B, T) response tokens; mean/std/signs (K,)."""
    z = (acts.float() - mean) / std  # (B, T, K)
    keep = mask.bool().unsqueeze(-1)
    z = z.masked_fill(~keep, 0.0)  # padding positions never leak in (not even a NaN from a fully masked row)
    per_neuron = z.sum(1) / keep.sum(1).clamp(min=1).to(z.dtype)  # (B, K): mean over response tokens
    return (per_neuron * signs).mean(-1)  # (B,)


class NeuronCapture:
    """Hooks on the down-projection inputs of a NeuronSet's layers, for one model instance."""

    def __init__(self, model: torch.nn.Module, neurons: NeuronSet):
        neurons.check_model(model)
        self.model = model
        self.neurons = neurons
        self.layers = sorted(neurons.by_layer())
        groups = neurons.by_layer()
        # positions into the NeuronSet order, and the neuron indices, per layer
        self._pos = {l: groups[l] for l in self.layers}
        self._idx = {l: neurons.indices[groups[l]] for l in self.layers}
        self._order = torch.cat([self._pos[l] for l in self.layers])
        self.mean = neurons.mean[self._order]
        self.std = neurons.std[self._order]
        self.signs = neurons.signs[self._order]
        self._recording: str | None = None
        self._acts: dict[str, dict[int, torch.Tensor]] = {}
        # set while the model runs on packed rows (yfpo.models.packing): maps captured (B, Lp, K) activations back
        # to the batch's own (2B, T, K) layout; applied when they are read, outside any checkpointed region
        self.layout = None
        self._layout: dict[str, object] = {}
        self._handles: list = []
        self._attach()

    def _attach(self) -> None:
        for l in self.layers:
            mod = arch.down_proj(self.model, l)
            self._handles.append(mod.register_forward_pre_hook(self._make_hook(l)))

    def _make_hook(self, layer: int):
        def hook(module, args):
            tag = self._recording
            # Activation checkpointing re-runs each layer's forward in backward (outside any window) and requires
            # the recomputation to save exactly the tensors the original forward saved; so whenever autograd
            # records, the same gather runs (and is discarded outside a window). Without grad nothing is saved.
            if tag is None and not torch.is_grad_enabled():
                return None
            u = args[0]
            picked = u.index_select(-1, self._idx_on(layer, u.device))
            if tag is not None:
                self._acts.setdefault(tag, {})[layer] = picked
                self._layout[tag] = self.layout
            return None

        return hook

    def _idx_on(self, layer: int, device) -> torch.Tensor:
        idx = self._idx[layer]
        if idx.device != torch.device(device):
            idx = self._idx[layer] = idx.to(device)
        return idx

    @contextlib.contextmanager
    def window(self, tag: str):
        """Record the down-projection inputs of forwards run inside the block under `tag` ('policy' / 'ref'); a window
        opened inside another records under its own tag and hands recording back to the outer one when it closes."""
        self._acts.pop(tag, None)
        self._layout.pop(tag, None)
        outer, self._recording = self._recording, tag
        try:
            yield
        finally:
            self._recording = outer

    def acts(self, tag: str) -> torch.Tensor:
        """(B, T, K) activations of the last `tag` forward, neurons in the capture's layer order."""
        got = self._acts.get(tag)
        if not got or len(got) != len(self.layers):
            raise RuntimeError(f"no '{tag}' activations captured (was the forward run inside capture.window('{tag}')?)")
        a = torch.cat([got[l] for l in self.layers], dim=-1)
        layout = self._layout.get(tag)
        return layout(a) if layout is not None else a

    def phi(self, tag: str, mask: torch.Tensor) -> torch.Tensor:
        a = self.acts(tag)
        dev = a.device
        return phi_from_acts(a, mask.to(dev), self.mean.to(dev), self.std.to(dev), self.signs.to(dev))

    def clear(self, tag: str | None = None) -> None:
        """Drop the captured activations (of one `tag` only, when given)."""
        if tag is None:
            self._acts.clear()
            self._layout.clear()
        else:
            self._acts.pop(tag, None)
            self._layout.pop(tag, None)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._acts.clear()
        self._layout.clear()


def neuron_margin(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split phi over the stacked [chosen; rejected] batch: (phi_w, phi_l, m = phi_w - phi_l)."""
    w, l = phi.chunk(2, dim=0)
    return w, l, w - l
