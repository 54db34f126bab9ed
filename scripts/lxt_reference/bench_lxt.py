"""Benchmark worker for lxt 2.1 on the default model (run in .venv-lxt; does not import yfpo).

Loads an HF Llama folder written by transformers 5 (config mapped to 4.57 keys), applies lxt's
efficient-mode AttnLRP patches, times one relevance pass (u * grad(u) at every down_proj input, target =
summed gold next-token logits over target positions) on a saved batch, and writes the relevance and the
timing. Called by benchmarks/bench_neurons.py.

    .venv-lxt/bin/python scripts/lxt_reference/bench_lxt.py MODEL_DIR BATCH.pt OUT.pt
"""

from __future__ import annotations

import json
import resource
import sys
import time
import types
from pathlib import Path

import torch
import transformers


def main() -> None:
    model_dir, batch_path, out_path = map(Path, sys.argv[1:4])
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else torch.get_num_threads())
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    vit = types.ModuleType("torchvision.models.vision_transformer")
    vit.nn = types.SimpleNamespace(GELU=type("G", (), {}), LayerNorm=type("L", (), {}), MultiheadAttention=type("M", (), {}))
    tv.models.vision_transformer = vit
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models, "torchvision.models.vision_transformer": vit})
    from lxt.efficient import monkey_patch
    from safetensors.torch import load_file
    from transformers.models.llama import modeling_llama

    cfg = json.loads((model_dir / "config.json").read_text())
    rope = cfg.pop("rope_parameters", None) or {}
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
            "attention_bias", "mlp_bias", "head_dim")
    config = transformers.LlamaConfig(**{k: cfg[k] for k in keep if k in cfg}, rope_theta=rope.get("rope_theta", 10000.0))
    config._attn_implementation = "sdpa"
    monkey_patch(modeling_llama)
    model = modeling_llama.LlamaForCausalLM(config)
    sd = load_file(str(model_dir / "model.safetensors"))
    model.load_state_dict(sd, strict=False)
    model.tie_weights()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    b = torch.load(batch_path)

    def run(batch):
        us = []
        hs = [l.mlp.down_proj.register_forward_pre_hook(lambda m, a: (a[0].retain_grad(), us.append(a[0])) and None)
              for l in model.model.layers]
        emb = model.model.embed_tokens(batch["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, attention_mask=batch["attention_mask"], use_cache=False).logits
        target = (logits.gather(-1, batch["gold"].unsqueeze(-1)).squeeze(-1) * batch["target_mask"]).sum(1)
        target.sum().backward()
        for h in hs:
            h.remove()
        m = batch["target_mask"].unsqueeze(-1).float()
        return torch.stack([(u.detach() * u.grad * m).sum(1) for u in us], 1)

    run({k: v[:1, :16] for k, v in b.items()})  # warm-up
    t0 = time.perf_counter()
    rel = run(b)
    dt = time.perf_counter() - t0
    torch.save({"relevance": rel, "time_s": dt, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6},
               out_path)


if __name__ == "__main__":
    main()
