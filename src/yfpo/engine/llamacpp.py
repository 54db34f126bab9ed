"""llama.cpp backend (llama-cpp-python) on an f32 GGUF converted from the HF folder.

NOT MEASURED here: llama-cpp-python ships as a source package and its build did not finish on the shared 2-core
machine (see benchmarks/RESULTS.md); this module is exercised only up to the "not installed" error in the tests.
The GGUF comes from $YFPO_GGUF, or is converted once with llama.cpp's convert_hf_to_gguf.py (path in
$YFPO_LLAMA_CONVERT; it is in the llama-cpp-python sdist under vendor/llama.cpp/) into ~/.cache/yfpo/gguf/.
Prompts run one at a time (the high-level API has no batching), greedy = top_k 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from yfpo.engine.common import Generation, cut_at_stop, eos_ids, finish_row, model_dir

_LLMS: dict = {}


def gguf_path(model_dir: str) -> Path:
    if os.environ.get("YFPO_GGUF"):
        return Path(os.environ["YFPO_GGUF"])
    out = (
        Path(os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo"))
        / "gguf"
        / f"{Path(model_dir).name}-f32.gguf"
    )
    if not out.exists():
        script = os.environ.get("YFPO_LLAMA_CONVERT")
        if not script or not Path(script).exists():
            raise RuntimeError(
                f"no GGUF for {model_dir}: set YFPO_GGUF to an f32 GGUF file, or YFPO_LLAMA_CONVERT to "
                "llama.cpp's convert_hf_to_gguf.py to convert the HF folder"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, script, model_dir, "--outtype", "f32", "--outfile", str(out)], check=True)
    return out


def generate_llamacpp(
    model, tokenizer, prompts, *, max_new_tokens, stop, do_sample, temperature, top_p, num_return_sequences, seed, **_
):
    from llama_cpp import Llama

    path = gguf_path(model_dir(model))
    key = (str(path), torch.get_num_threads())
    if key not in _LLMS:
        _LLMS.clear()
        _LLMS[key] = Llama(
            model_path=str(path), n_ctx=4096, n_threads=torch.get_num_threads(), seed=seed, verbose=False
        )
    llm = _LLMS[key]
    eos = set(eos_ids(model, tokenizer))
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False).input_ids  # the HF tokenizer's ids: same vocabulary in the GGUF
        for _ in range(num_return_sequences):
            llm.reset()
            row: list[int] = []
            for t in llm.generate(
                ids,
                top_k=0 if do_sample else 1,
                top_p=top_p if do_sample else 1.0,
                temp=temperature if do_sample else 0.0,
                reset=True,
            ):
                row.append(t)
                if t in eos or len(row) >= max_new_tokens:
                    break
            row = cut_at_stop(row, tokenizer, stop)
            n_tok, text, finish = finish_row(row, tokenizer, sorted(eos), None, stop)
            out.append(Generation(text, n_tok, finish == "length", finish))
    return out
