"""Reference AttnLRP neuron relevances from lxt 2.1 (the authors' implementation), for the fixture test.

Runs in a SEPARATE environment (.venv-lxt: transformers 4.57.6 + lxt 2.1, see README.md); it does not
import yfpo. For each family folder written by make_inputs.py it builds the model from config.json +
model.pt, applies lxt's efficient-mode AttnLRP patches (lxt.efficient.monkey_patch -- global, which is
fine in this throw-away process), and writes reference.pt with:

  relevance   (B, L, W) float32: per sample, sum over target positions of u * grad(u) at the down_proj input
  target      (B,)   sum over target positions of the gold next-token logit
  input_relevance (B,) sum of inputs_embeds * grad (conservation: compare with target)
  versions    {torch, transformers, lxt}

    .venv-lxt/bin/python scripts/lxt_reference/lxt_reference.py [--dir tests/fixtures/lxt]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import types
from pathlib import Path

import torch
import transformers  # before the torchvision stand-in: transformers probes torchvision with find_spec


def _torchvision_stand_in() -> None:
    """lxt.efficient.models imports torchvision's ViT module at import time; only names are needed."""
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    vit = types.ModuleType("torchvision.models.vision_transformer")
    vit.nn = types.SimpleNamespace(GELU=type("GELU", (), {}), LayerNorm=type("LayerNorm", (), {}),
                                   MultiheadAttention=type("MultiheadAttention", (), {}))
    models.vision_transformer = vit
    tv.models = models
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.vision_transformer": vit})


def run(folder: Path) -> None:
    from lxt.efficient import monkey_patch

    cfg = json.loads((folder / "config.json").read_text())
    mt = cfg.pop("model_type")
    if mt == "llama":
        from transformers.models.llama import modeling_llama as mod
        config = transformers.LlamaConfig(**cfg)
        cls = mod.LlamaForCausalLM
    elif mt == "qwen2":
        from transformers.models.qwen2 import modeling_qwen2 as mod
        cfg.pop("attention_bias", None), cfg.pop("mlp_bias", None), cfg.pop("head_dim", None)
        config = transformers.Qwen2Config(**cfg)
        cls = mod.Qwen2ForCausalLM
    else:
        raise SystemExit(f"{folder}: model_type {mt!r} not handled")
    config._attn_implementation = "sdpa"
    monkey_patch(mod, verbose=False)
    model = cls(config)
    missing, unexpected = model.load_state_dict(torch.load(folder / "model.pt"), strict=False)
    if unexpected or [k for k in missing if "rotary" not in k]:
        raise SystemExit(f"{folder}: state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    b = torch.load(folder / "batch.pt")
    us: list[torch.Tensor] = []

    def pre_hook(module, args):
        args[0].retain_grad()
        us.append(args[0])

    handles = [layer.mlp.down_proj.register_forward_pre_hook(pre_hook) for layer in model.model.layers]
    emb = model.model.embed_tokens(b["input_ids"]).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=b["attention_mask"], use_cache=False).logits
    gold_logit = logits.gather(-1, b["gold"].unsqueeze(-1)).squeeze(-1)
    target = (gold_logit * b["target_mask"]).sum(1)
    target.sum().backward()
    for h in handles:
        h.remove()
    mask = b["target_mask"].unsqueeze(-1).float()
    relevance = torch.stack([(u.detach() * u.grad * mask).sum(1) for u in us], dim=1).float()
    ref = {
        "relevance": relevance,
        "target": target.detach(),
        "input_relevance": (emb * emb.grad).sum((1, 2)).detach(),
        "versions": {"torch": str(torch.__version__), "transformers": transformers.__version__, "lxt": md.version("lxt")},
    }
    torch.save(ref, folder / "reference.pt")
    err = (ref["input_relevance"] - ref["target"]).abs() / ref["target"].abs()
    print(f"{folder.name}: relevance {tuple(relevance.shape)}; target {ref['target'].tolist()}; "
          f"input relevance {ref['input_relevance'].tolist()} (relative conservation error {err.tolist()})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lxt"))
    args = ap.parse_args()
    _torchvision_stand_in()
    # lxt patches classes globally and irreversibly: run each family in its own process.
    folders = sorted(p for p in Path(args.dir).iterdir() if (p / "batch.pt").exists())
    if len(sys.argv) > 1 and sys.argv[-1].startswith("--only="):
        folders = [f for f in folders if f.name == sys.argv[-1][7:]]
    for f in folders:
        run(f)


if __name__ == "__main__":
    main()
