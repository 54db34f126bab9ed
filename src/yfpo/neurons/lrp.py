"""AttnLRP rules (Achtibat et al., ICML 2024) applied to ONE model instance, reversibly.

Inside ``with attnlrp(model):`` a plain backward pass of ``target`` gives the AttnLRP relevance
of any activation ``x`` as ``x * x.grad`` (the Gradient*Input formulation of lxt's efficient mode):

- element-wise nonlinearities (MLP activation): identity rule -- forward ``act(x)``, backward
  ``grad * act(x) / (x + 1e-10)``  (lxt ``identity_rule_implicit``);
- gated MLP product ``act(gate) * up``: uniform rule -- the product's gradient is halved
  (lxt ``divide_gradient(weighted, 2)``);
- attention ``q.k`` and ``softmax.v`` products: uniform rule -- the gradient reaching the query and
  key is divided by 4 and the value by 2 (lxt ``wrap_attention_forward``); the softmax keeps its
  plain gradient, as in lxt's efficient mode;
- RMSNorm / LayerNorm: stop-gradient through the variance (lxt ``rms_norm_forward``,
  ``layer_norm_forward``, ``gemma3_norm``);
- Dropout modules of the instance act as identity (as lxt does) and read p = 0; attention dropout is 0.

How it is scoped: only *instance* attributes of this model's modules are set (``forward`` of its MLP,
norm and Dropout modules; ``_norm`` of Gemma3 norms; ``attention_dropout``; Dropout ``p``) and forward hooks are
registered on its q/k/v projections; all are removed on exit, also on exceptions. No class, no
transformers registry and no other model instance is touched. lxt itself patches model classes
globally (and every Dropout); that is what this module replaces.

The q/k/v gradient division is applied at the output of the q/k/v projections instead of at the
attention-function inputs. Between the two there are only maps whose backward is linear in the
incoming gradient (reshape, RoPE, the Qwen3/Gemma3 q/k norm under stop-gradient), and the factors
are powers of two, so every gradient upstream of the projections -- in particular at every neuron --
is the same as lxt's. This keeps ``config._attn_implementation`` (shared, and tied to the mask
format) untouched.
"""

from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator

import torch
import torch.nn as nn

from yfpo.models import arch

# Where each family keeps the attention input projections (q, k, v). gpt2 fuses them in one
# Conv1D whose output is [q | k | v] along the last dimension.
QKV_PROJ: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj"),
    "gemma3": ("q_proj", "k_proj", "v_proj"),
    "gpt2": ("c_attn",),
}

_EPS = 1e-10  # lxt identity_rule_implicit_fn epsilon


class _IdentityRule(torch.autograd.Function):
    """Forward ``fn(x)``; backward ``grad * fn(x) / (x + eps)`` (lxt identity_rule_implicit_fn)."""

    @staticmethod
    def forward(ctx, fn, x):  # type: ignore[override]
        out = fn(x)
        if x.requires_grad:
            ctx.save_for_backward(out / (x + _EPS))
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return None, ratio * grad


class _ScaleGrad(torch.autograd.Function):
    """Forward identity; backward multiplies the gradient by `scale` (a number or a broadcastable tensor)."""

    @staticmethod
    def forward(ctx, x, scale):  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * ctx.scale, None


def identity_rule(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` whose relevance (x * grad) equals the output relevance (AttnLRP identity rule)."""
    return _IdentityRule.apply(fn, x)


def divide_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` with its backward gradient divided by `factor` (AttnLRP uniform rule over `factor` inputs)."""
    return _ScaleGrad.apply(x, 1.0 / factor)


# ---------------------------------------------------------------- per-instance forwards
def _gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate = identity_rule(self.act_fn, self.gate_proj(x))
    weighted = divide_gradient(gate * self.up_proj(x), 2)
    return self.down_proj(weighted)


def _gpt2_mlp_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    h = identity_rule(self.act, self.c_fc(hidden_states))
    return self.dropout(self.c_proj(h))


def _rms_norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon).detach()
    return self.weight * hidden_states.to(input_dtype)


def _gemma_norm(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps).detach()


def _layer_norm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    std = (var + self.eps).sqrt()
    y = (x - mean) / std.detach()
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def _identity_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------- the context manager
_MISSING = object()


class _Patcher:
    """Sets instance attributes and hooks, remembering how to undo each."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set_attr(self, obj: object, name: str, value: object) -> None:
        old = obj.__dict__.get(name, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                obj.__dict__.pop(name, None)
            else:
                obj.__dict__[name] = old

        if isinstance(obj, nn.Module) and not isinstance(value, (nn.Module, nn.Parameter, torch.Tensor)):
            object.__setattr__(obj, name, value)
        else:
            setattr(obj, name, value)
        self._undo.append(undo)

    def bind(self, module: nn.Module, name: str, fn: Callable) -> None:
        self.set_attr(module, name, types.MethodType(fn, module))

    def hook(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._undo.append(handle.remove)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def _qkv_hook(factors: torch.Tensor | float) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        scale = factors
        if isinstance(scale, torch.Tensor):
            scale = scale.to(device=output.device, dtype=output.dtype)
        return _ScaleGrad.apply(output, scale)

    return hook


@contextlib.contextmanager
def attnlrp(model: nn.Module) -> Iterator[nn.Module]:
    """Apply the AttnLRP rules to this model instance for the duration of the block.

    Forward values are unchanged; only the backward pass changes. On exit (normal or by an
    exception) the instance is exactly as before. Raises UnsupportedModelError for families that
    yfpo.models.arch does not know.
    """
    m = arch.unwrap(model)
    a = arch.get_arch(m)
    qkv_names = QKV_PROJ.get(a.family)
    if qkv_names is None:
        raise arch.UnsupportedModelError(f"AttnLRP rules: no q/k/v projection names known for family {a.family!r}")
    p = _Patcher()
    try:
        n_layers = arch.num_layers(m)
        for i in range(n_layers):
            mlp = arch.mlp(m, i)
            p.bind(mlp, "forward", _gated_mlp_forward if a.gated else _gpt2_mlp_forward)
            attn = arch.attention(m, i)
            if hasattr(attn, "attention_dropout"):
                p.set_attr(attn, "attention_dropout", 0.0)
            if a.family == "gpt2":
                proj = getattr(attn, qkv_names[0])
                width = proj.nf if hasattr(proj, "nf") else proj.weight.shape[-1]
                d = width // 3
                scale = torch.cat([torch.full((2 * d,), 0.25), torch.full((d,), 0.5)])
                p.hook(proj.register_forward_hook(_qkv_hook(scale)))
            else:
                for name, factor in zip(qkv_names, (4.0, 4.0, 2.0)):
                    p.hook(getattr(attn, name).register_forward_hook(_qkv_hook(1.0 / factor)))
        for _, norm in arch.norm_modules(m):
            if hasattr(norm, "_norm") and hasattr(norm, "eps") and not hasattr(norm, "variance_epsilon"):
                p.bind(norm, "_norm", _gemma_norm)  # Gemma-style: forward = _norm(x) * (1 + w)
            elif isinstance(norm, nn.LayerNorm):
                p.bind(norm, "forward", _layer_norm_forward)
            elif hasattr(norm, "variance_epsilon"):
                p.bind(norm, "forward", _rms_norm_forward)
            else:
                raise arch.UnsupportedModelError(f"AttnLRP rules: unknown normalisation module {type(norm).__name__}")
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                p.bind(mod, "forward", _identity_forward)
                p.set_attr(mod, "p", 0.0)  # attention code reads `.p` for the attention-kernel dropout
        yield model
    finally:
        p.restore()
