"""Write the inputs of the lxt reference fixture (run with the yfpo venv).

For each family (llama, qwen2): a seeded tiny model's config (plain keys that transformers 4.57 also
reads), its weights (torch.save state dict; *.safetensors is gitignored) and one right-padded batch of
teacher-forced chat sequences with target masks. `lxt_reference.py` (run in .venv-lxt) reads these
and adds `reference.pt`. See README.md.

    .venv/bin/python scripts/lxt_reference/make_inputs.py [--out tests/fixtures/lxt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

FAMILIES = ("llama", "qwen2")
CONFIG_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
               "tie_word_embeddings", "attention_bias", "mlp_bias", "head_dim", "model_type")


def main() -> None:
    from yfpo.data.corpora import contrast_corpus, math_corpus
    from yfpo.models.tiny import tiny_model
    from yfpo.neurons.relevance import collate, encode_record

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lxt"))
    args = ap.parse_args()
    for fam in FAMILIES:
        model, tok = tiny_model(fam, seed=0)
        d = model.config.to_dict()
        cfg = {k: d[k] for k in CONFIG_KEYS if k in d}
        cfg["rope_theta"] = float((d.get("rope_parameters") or {}).get("rope_theta", d.get("rope_theta", 10000.0)))
        records = math_corpus(2, seed=1) + contrast_corpus(1, seed=1)
        enc = [encode_record(tok, r.prompt, r.response, 40 - 6 * i, r.id) for i, r in enumerate(records)]
        batch = collate(enc, tok.pad_token_id)
        out = Path(args.out) / fam
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / "model.pt")
        torch.save(batch, out / "batch.pt")
        print(f"{fam}: wrote {out} (batch {tuple(batch['input_ids'].shape)})")


if __name__ == "__main__":
    main()
