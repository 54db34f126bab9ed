"""Prompt sharing for DPO batches: each pair's prompt runs once (chosen and rejected packed behind it).

`PromptSharing.around(inputs, model, captures)` wraps one forward of `model` on TRL's [chosen; rejected] batch:
the model's decoder stack runs on packed rows (yfpo.models.packing) and its hidden states, and the activations the
`captures` record, come back in TRL's two-rows-per-pair layout, so the caller sees what an unpacked forward gives
(same log-probs and gradients up to float rounding). The first packable batch of each backbone is checked first
(its first pair, packed and not, eval mode, no gradients); a model that does not reproduce it (no 4-D mask or
position-id support) runs unpacked from then on.
"""

from __future__ import annotations

import contextlib

import torch

from yfpo.log import get_logger
from yfpo.models import arch
from yfpo.models.packing import PACKABLE_ATTENTION, backbone_of, pack_pairs, run_packed

logger = get_logger(__name__)


class PromptSharing:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.checked: dict[int, bool] = {}  # per backbone (id): whether its packed forward reproduced the plain one
        self.batches = 0  # forwards (policy or reference) run on packed rows

    def backbone(self, model):
        """The decoder stack of `model` to run on packed rows, or None."""
        if not self.enabled:
            return None
        causal = arch.unwrap(model)
        if getattr(causal.config, "_attn_implementation", None) not in PACKABLE_ATTENTION:
            return None
        return backbone_of(causal)

    def pack(self, inputs, model, bb):
        """The PairPack for this batch, or None to run TRL's two rows per pair (checked once per backbone)."""
        ok = self.checked.get(id(bb))
        if ok is False:
            return None
        dtype = arch.unwrap(model).get_input_embeddings().weight.dtype
        pack = pack_pairs(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], dtype)
        if pack is None or ok:
            return pack
        ok = self.checked[id(bb)] = self._reproduces(inputs, bb, dtype)
        if not ok:
            logger.warning(
                "[yfpo train] share_prompt: this model's packed forward differs from its plain one; two rows per pair"
            )
        return pack if ok else None

    @staticmethod
    def _reproduces(inputs, bb, dtype) -> bool:
        """Whether the backbone's packed forward of the batch's first pair gives its plain hidden states."""
        B = inputs["input_ids"].shape[0] // 2
        one = [0, B]
        ids, att = inputs["input_ids"][one], inputs["attention_mask"][one]
        small = pack_pairs(ids, att, inputs["completion_mask"][one], dtype)
        was_training = bb.training
        bb.eval()
        try:
            with torch.no_grad():
                ref = bb(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
                with run_packed(bb, small):
                    got = bb(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        finally:
            bb.train(was_training)
        keep = att.bool()
        tol = 1e-3 if dtype == torch.float32 else 3e-2
        return bool(torch.allclose(got[keep].float(), ref[keep].float(), atol=tol, rtol=tol))

    @contextlib.contextmanager
    def around(self, inputs, model, captures=()):
        """Around one forward of `model` on a DPO batch: packed when possible (see the module docstring)."""
        bb = self.backbone(model)
        pack = self.pack(inputs, model, bb) if bb is not None else None
        if pack is None:
            yield
            return
        captures = [c for c in captures if c is not None]
        for c in captures:
            c.layout = pack.unpack
        try:
            with run_packed(bb, pack):
                yield
        finally:
            for c in captures:
                c.layout = None
        self.batches += 1
