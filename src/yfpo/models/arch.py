"""The ONE place that knows where a model family keeps its parts.

A *neuron* (SPEC section 2) is one unit of the input of a decoder layer's MLP down projection:
``u = act(W_gate h) * (W_up h)`` for gated MLPs, ``act(W_fc h)`` for GPT-2 style MLPs.
Everything in yfpo that touches model internals (neuron hooks, AttnLRP rules, FDT's LM head,
ablations) asks this module for the modules it needs. Adding a family is one entry in FAMILIES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn


class UnsupportedModelError(ValueError):
    """Raised for a model family yfpo does not know how to look inside."""


@dataclass(frozen=True)
class Arch:
    family: str
    model_types: tuple[str, ...]
    layers: str  # dotted path from the *CausalLM* module to the ModuleList of decoder layers
    final_norm: str  # dotted path from the CausalLM module to the final norm
    lm_head: str  # dotted path from the CausalLM module to the output projection
    embed: str  # dotted path to the input embedding
    mlp: str  # attribute of a decoder layer holding the MLP
    down_proj: str  # attribute of the MLP whose *input* is the neuron vector u
    gated: bool  # u = act(gate(h)) * up(h) if True else act(fc(h))
    gate_proj: str | None  # attribute of the MLP (gated only)
    up_proj: str  # attribute of the MLP: up_proj (gated) or c_fc (plain)
    act: str  # attribute of the MLP holding the activation function module
    attn: str  # attribute of a decoder layer holding the self-attention module
    norm_types: tuple[str, ...]  # class-name suffixes of the normalisation modules
    intermediate_size_key: str  # config key of the MLP width


FAMILIES: dict[str, Arch] = {
    "llama": Arch(
        family="llama",
        model_types=("llama", "mistral", "smollm3"),
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        embed="model.embed_tokens",
        mlp="mlp",
        down_proj="down_proj",
        gated=True,
        gate_proj="gate_proj",
        up_proj="up_proj",
        act="act_fn",
        attn="self_attn",
        norm_types=("RMSNorm",),
        intermediate_size_key="intermediate_size",
    ),
    "qwen2": Arch(
        family="qwen2",
        model_types=("qwen2",),
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        embed="model.embed_tokens",
        mlp="mlp",
        down_proj="down_proj",
        gated=True,
        gate_proj="gate_proj",
        up_proj="up_proj",
        act="act_fn",
        attn="self_attn",
        norm_types=("RMSNorm",),
        intermediate_size_key="intermediate_size",
    ),
    "qwen3": Arch(
        family="qwen3",
        model_types=("qwen3",),
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        embed="model.embed_tokens",
        mlp="mlp",
        down_proj="down_proj",
        gated=True,
        gate_proj="gate_proj",
        up_proj="up_proj",
        act="act_fn",
        attn="self_attn",
        norm_types=("RMSNorm",),
        intermediate_size_key="intermediate_size",
    ),
    "gemma3": Arch(
        family="gemma3",
        model_types=("gemma3_text", "gemma2", "gemma"),
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        embed="model.embed_tokens",
        mlp="mlp",
        down_proj="down_proj",
        gated=True,
        gate_proj="gate_proj",
        up_proj="up_proj",
        act="act_fn",
        attn="self_attn",
        norm_types=("RMSNorm",),
        intermediate_size_key="intermediate_size",
    ),
    "gpt2": Arch(
        family="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
        mlp="mlp",
        down_proj="c_proj",
        gated=False,
        gate_proj=None,
        up_proj="c_fc",
        act="act",
        attn="attn",
        norm_types=("LayerNorm",),
        intermediate_size_key="n_inner",
    ),
}

_BY_MODEL_TYPE = {mt: a for a in FAMILIES.values() for mt in a.model_types}


def unwrap(model: nn.Module) -> nn.Module:
    """Return the underlying transformers CausalLM of a PEFT / DDP / compiled wrapper."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
            continue
        if hasattr(model, "module") and isinstance(model.module, nn.Module) and not hasattr(model, "config"):
            model = model.module  # DDP / accelerate wrapper
            continue
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
            continue
        break
    return model


def model_type_of(model_or_config: Any) -> str:
    cfg = (
        getattr(unwrap(model_or_config), "config", model_or_config)
        if isinstance(model_or_config, nn.Module)
        else model_or_config
    )
    mt = getattr(cfg, "model_type", None)
    if mt is None and isinstance(cfg, dict):
        mt = cfg.get("model_type")
    if mt is None:
        raise UnsupportedModelError(f"cannot tell the model family: no `model_type` on {type(cfg).__name__}")
    return str(mt)


def get_arch(model_or_config: Any) -> Arch:
    """The Arch entry for a model, a config, or a model_type string."""
    mt = model_or_config if isinstance(model_or_config, str) else model_type_of(model_or_config)
    try:
        return _BY_MODEL_TYPE[mt]
    except KeyError:
        known = ", ".join(sorted(_BY_MODEL_TYPE))
        raise UnsupportedModelError(
            f"model_type {mt!r} is not supported by yfpo.models.arch; known model types: {known}. "
            "Adding a family is one entry in yfpo/models/arch.py FAMILIES."
        ) from None


def _get(root: nn.Module, dotted: str) -> Any:
    obj: Any = root
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise UnsupportedModelError(f"{type(root).__name__} has no `{dotted}` (missing `{part}`)")
        obj = getattr(obj, part)
    return obj


def layers(model: nn.Module) -> nn.ModuleList:
    m = unwrap(model)
    return _get(m, get_arch(m).layers)


def num_layers(model: nn.Module) -> int:
    return len(layers(model))


def intermediate_size(model: nn.Module) -> int:
    m = unwrap(model)
    a = get_arch(m)
    width = getattr(m.config, a.intermediate_size_key, None)
    if width is None:  # gpt2: n_inner=None means 4 * n_embd
        width = 4 * m.config.n_embd
    return int(width)


def neuron_shape(model: nn.Module) -> tuple[int, int]:
    """(num_layers, intermediate_size): the grid of neurons."""
    return num_layers(model), intermediate_size(model)


def mlp(model: nn.Module, layer: int) -> nn.Module:
    m = unwrap(model)
    return getattr(layers(m)[layer], get_arch(m).mlp)


def down_proj(model: nn.Module, layer: int) -> nn.Module:
    """The module whose forward *input* is the neuron vector u of `layer` (hook it with a pre-hook)."""
    m = unwrap(model)
    return getattr(mlp(m, layer), get_arch(m).down_proj)


def attention(model: nn.Module, layer: int) -> nn.Module:
    m = unwrap(model)
    return getattr(layers(m)[layer], get_arch(m).attn)


def final_norm(model: nn.Module) -> nn.Module:
    m = unwrap(model)
    return _get(m, get_arch(m).final_norm)


def lm_head(model: nn.Module) -> nn.Module:
    m = unwrap(model)
    return _get(m, get_arch(m).lm_head)


def embed_tokens(model: nn.Module) -> nn.Module:
    m = unwrap(model)
    return _get(m, get_arch(m).embed)


def norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All normalisation modules (RMSNorm / LayerNorm) of the model, by name."""
    m = unwrap(model)
    suffixes = get_arch(m).norm_types
    return [(n, mod) for n, mod in m.named_modules() if type(mod).__name__.endswith(suffixes)]
