"""Generation backends: one interface, so pairs, the causal check, eval (and online RL) get a new backend at once.

A backend is a function with `generate`'s keyword arguments that returns one `Generation` per (prompt, sample),
prompt-major, plus what the caller needs to choose it:
  exact      greedy float32 outputs are meant to equal the HF reference (measured in benchmarks/RESULTS.md)
  quantized  runs reduced-precision weights: used only when asked for by name, never by `auto`
  missing    why it cannot run here (package not installed, no GPU, ...), or None

`auto` picks vLLM when it is installed and a GPU is present (today's behaviour), else the fastest exact CPU path
("fast-attn" where its kernel builds and serves the model, else "fast"; measured), and falls back to the HF reference
when neither can serve the model.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from yfpo.engine import attn_kernel
from yfpo.engine.common import model_dir
from yfpo.engine.ct2 import generate_ct2
from yfpo.engine.fast import generate_fast, generate_fast_attn, generate_fast_bf16
from yfpo.engine.hf import generate_hf
from yfpo.engine.llamacpp import generate_llamacpp
from yfpo.engine.vllm import generate_vllm_backend
from yfpo.utils import atomic_write_json


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable  # (model, tokenizer, prompts, **generate kwargs) -> list[Generation]
    exact: bool
    quantized: bool
    missing: Callable  # (model) -> str | None
    about: str


def _has(pkg: str) -> bool:
    return importlib.util.find_spec(pkg) is not None


def _always(model) -> str | None:
    return None


def _vllm_missing(model) -> str | None:
    if not _has("vllm"):
        return "the vllm package is not installed (pip install vllm; GPU only)"
    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and none is visible"
    return None


def _fast_missing(model) -> str | None:
    if getattr(model.config, "is_encoder_decoder", False):
        return "the fast loop serves decoder-only models; this one is encoder-decoder"
    return None


def _fast_attn_missing(model) -> str | None:
    why = _fast_missing(model)
    if why:
        return why
    return attn_kernel.usable(model)


def _ct2_missing(model) -> str | None:
    if not _has("ctranslate2"):
        return "the ctranslate2 package is not installed (pip install ctranslate2)"
    if model_dir(model) is None:
        return "ctranslate2 converts the model from its HF folder, and this model has none (name_or_path)"
    return None


def _llamacpp_missing(model) -> str | None:
    if not _has("llama_cpp"):
        return (
            "the llama-cpp-python package is not installed (pip install llama-cpp-python; it compiles llama.cpp "
            "from source)"
        )
    if not _has("gguf"):
        return "the gguf package is needed to convert the HF folder to GGUF (pip install gguf)"
    if model_dir(model) is None:
        return "llama.cpp converts the model from its HF folder, and this model has none (name_or_path)"
    return None


def _registry() -> dict[str, Backend]:
    return {
        b.name: b
        for b in [
            Backend(
                "hf",
                generate_hf,
                True,
                False,
                _always,
                "Hugging Face model.generate, length-sorted left-padded batches of batch_size rows (the reference)",
            ),
            Backend(
                "fast",
                generate_fast,
                True,
                False,
                _fast_missing,
                "the same HF model in a lean decode loop: token-filled batches, finished rows dropped, shared prefill",
            ),
            Backend(
                "fast-attn",
                generate_fast_attn,
                True,
                False,
                _fast_attn_missing,
                "the fast loop whose decode steps attend through a C kernel built here at first use (float32; "
                "another summation order than SDPA)",
            ),
            Backend(
                "fast-bf16",
                generate_fast_bf16,
                False,
                True,
                _fast_missing,
                "the fast loop on a bfloat16 copy of the model (AVX-512 BF16 GEMMs; reduced precision, on request)",
            ),
            Backend(
                "ct2", generate_ct2, True, False, _ct2_missing, "CTranslate2, float32, converted from the HF folder"
            ),
            Backend(
                "ct2-int8",
                functools.partial(generate_ct2, compute_type="int8"),
                False,
                True,
                _ct2_missing,
                "CTranslate2 with int8 weights (quantized)",
            ),
            Backend(
                "llamacpp",
                generate_llamacpp,
                True,
                False,
                _llamacpp_missing,
                "llama.cpp (llama-cpp-python) on an f32 GGUF converted from the HF folder",
            ),
            Backend("vllm", generate_vllm_backend, False, False, _vllm_missing, "vLLM (GPU)"),
        ]
    }


BACKEND_NAMES = ("auto", "hf", "fast", "fast-attn", "fast-bf16", "ct2", "ct2-int8", "llamacpp", "vllm")
# vllm only with a GPU and a model folder; then the fastest exact CPU path (fast-attn where its kernel builds)
AUTO_ORDER = ("vllm", "fast-attn", "fast", "hf")


def resolve(name: str, model) -> Backend:
    """The backend to run for `name` (a clear error when it cannot run here; `auto` falls back down AUTO_ORDER)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend {name!r}: expected one of {', '.join(BACKEND_NAMES)}")
    reg = _registry()
    if name == "auto":
        for cand in AUTO_ORDER:
            b = reg[cand]
            if b.missing(model) is None and (cand != "vllm" or model_dir(model)):
                return b
        return reg["hf"]
    b = reg[name]
    why = b.missing(model)
    if why:
        raise RuntimeError(f"backend {name!r} cannot run here: {why}; use --backend hf (the reference) or auto")
    return b


def record(requested: str, model) -> dict:
    """What a result records of its generation backend: the one asked for and the one `resolve` runs."""
    b = resolve(requested, model)
    return {"requested": requested, "used": b.name, "exact": b.exact, "quantized": b.quantized}


def pin(folder, requested: str, model) -> str:
    """Resolve `requested` for `model` and pin the result in FOLDER/backend.json: work started with one backend
    is never continued with another (`auto` can resolve differently on another machine or install). Returns the
    backend that runs; a mismatch is a one-line error naming the folder."""
    rec = record(requested, model)
    f = Path(folder) / "backend.json"
    if f.exists():
        had = json.loads(f.read_text())
        if had.get("used") != rec["used"]:
            raise ValueError(
                f"{folder}: was generated with backend {had.get('used')!r} (requested {had.get('requested')!r}); "
                f"here {requested!r} runs {rec['used']!r}: pass --backend {had.get('used')} to continue it, or start "
                "another folder"
            )
    else:
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_json(f, rec)
    return rec["used"]
