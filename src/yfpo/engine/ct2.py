"""CTranslate2 backend: the HF folder converted once to a CTranslate2 model (cached), decoded by ctranslate2.Generator.

float32 ("ct2", meant to be exact) or int8 weights ("ct2-int8", quantized: only on request). Stop strings are applied
to the finished rows (CTranslate2 stops on end tokens only): the row is cut at the token that completed the stop
string, as the HF reference does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from yfpo.engine.common import Generation, cut_at_stop, eos_ids, finish_row, model_dir

_GENERATORS: dict = {}


def converted_dir(model_dir: str, quantization: str) -> Path:
    """The CTranslate2 copy of an HF folder (converted on first use, reused after)."""
    import ctranslate2

    root = Path(os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo")) / "ct2"
    src = Path(model_dir).resolve()
    stamp = "|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(src.glob("*.safetensors")))
    key = hashlib.sha256(f"{src}|{stamp}".encode()).hexdigest()[:10]
    out = root / f"{src.name}-{key}-{quantization}-ct2-{ctranslate2.__version__}"
    if not (out / "model.bin").exists():
        from ctranslate2.converters import TransformersConverter

        out.parent.mkdir(parents=True, exist_ok=True)
        TransformersConverter(str(src)).convert(str(out), quantization=quantization, force=True)
        cfg = json.loads((out / "config.json").read_text())
        for k in ("bos_token", "unk_token"):  # CTranslate2 cannot load a null special token (tokenizers without one)
            if cfg.get(k) is None:
                cfg[k] = cfg.get("eos_token") or ""
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def _generator(model_dir: str, compute_type: str):
    import ctranslate2

    key = (model_dir, compute_type, torch.get_num_threads())
    if key not in _GENERATORS:
        _GENERATORS.clear()
        path = converted_dir(model_dir, "float32" if compute_type == "float32" else compute_type)
        _GENERATORS[key] = ctranslate2.Generator(
            str(path), device="cpu", compute_type=compute_type, intra_threads=torch.get_num_threads()
        )
    return _GENERATORS[key]


def generate_ct2(
    model,
    tokenizer,
    prompts,
    *,
    max_new_tokens,
    batch_size,
    stop,
    do_sample,
    temperature,
    top_p,
    num_return_sequences,
    seed,
    compute_type: str = "float32",
    **_,
):

    gen = _generator(model_dir(model), compute_type)
    eos = eos_ids(model, tokenizer)
    n = num_return_sequences
    toks = [tokenizer.convert_ids_to_tokens(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    opts = dict(
        max_length=max_new_tokens,
        include_prompt_in_result=False,
        end_token=eos,
        return_end_token=True,
        max_batch_size=batch_size,
    )
    if do_sample:
        opts.update(
            sampling_topk=0,
            sampling_topp=top_p,
            sampling_temperature=temperature,
            num_hypotheses=n,
            return_alternatives=False,
        )
        import ctranslate2

        ctranslate2.set_random_seed(seed)
    res = (
        gen.generate_batch(toks, **opts)
        if not (do_sample and n > 1)
        else gen.generate_batch([t for t in toks for _ in range(n)], **{**opts, "num_hypotheses": 1})
    )
    out = []
    for r in res:
        for ids in r.sequences_ids[:1] if not do_sample or n == 1 else r.sequences_ids[:1]:
            row = cut_at_stop(list(ids), tokenizer, stop)
            n_tok, text, finish = finish_row(row, tokenizer, eos, None, stop)
            out.append(Generation(text, n_tok, finish == "length", finish))
    if not do_sample and n > 1:  # greedy: the n copies are the same
        out = [g for g in out for _ in range(n)]
    return out
