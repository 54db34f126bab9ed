"""What every generation backend shares: the `Generation` record, end-of-turn ids, how a generated row ends
(end-of-turn token, stop string, length), stop-string detection, the per-batch sampling seed, the model's folder.
Backends (hf.py, fast.py, ct2.py, llamacpp.py, vllm.py) import this module and nothing of each other."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from yfpo.models.loading import is_adapter_dir, merged_copy


@dataclass
class Generation:
    text: str
    n_tokens: int
    truncated: bool  # stopped by max_new_tokens (no end-of-turn token, no stop string)
    finish: str = "eos"  # eos | stop | length
    # generated tokens (end-of-turn included) where the backend gives them; not part of equality (texts are compared)
    token_ids: list[int] | None = field(default=None, compare=False)


def batch_seed(seed: int, prompts: list[str]) -> int:
    h = hashlib.sha256(("\x00".join(prompts) + f"|{seed}").encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def sample_seed(seed: int, item_id: str) -> int:
    """A per-item seed (for generate's seeds=) from the run seed and the item id (independent of batching and resume)."""
    h = hashlib.sha256(f"{seed}|{item_id}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def model_dir(model) -> str | None:
    """The model's HF folder (for the backends that read one); a LoRA adapter folder (a training's final/) gets a
    merged copy, written once (models.loading.merged_copy), never its base model's folder."""
    p = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "name_or_path", None)
    if p and is_adapter_dir(p):
        return str(merged_copy(model, p))
    return p if p and os.path.isdir(p) else None


def eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if src is None:
            continue
        ids.update(src if isinstance(src, (list, tuple)) else [src])
    vocab = tokenizer.get_vocab()  # (slow on big vocabularies: once, not per token)
    for tok in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
        tid = vocab.get(tok)
        if (
            tid is not None
            and tid != tokenizer.unk_token_id
            and tok in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<end_of_turn>")
        ):
            ids.add(tid)
    return sorted(ids)


def finish_row(
    row: list[int], tokenizer, eos_ids: list[int], pad_id: int | None, stop: list[str] | None
) -> tuple[int, str, str]:
    """One generated row -> (number of generated tokens, text, finish reason).

    A row ends at its first end-of-turn token (finish "eos", the token counted, not in the text). HF pads
    a row that finished before the others with pad_id; a row stopped by a stop string is such a row, so
    trailing pads are not counted. The text is cut before the first stop string (finish "stop"); a row
    that ran to max_new_tokens has finish "length".
    """
    eos = set(eos_ids)
    n_tok, finish = len(row), "length"
    for j, t in enumerate(row):
        if t in eos:
            n_tok, finish = j + 1, "eos"
            break
    if finish == "length" and pad_id is not None:
        while n_tok > 0 and row[n_tok - 1] == pad_id:
            n_tok -= 1
        if n_tok < len(row):
            finish = "stop"  # HF finished this row early (stop string) and padded it
    text = tokenizer.decode(row[: n_tok - 1] if finish == "eos" else row[:n_tok], skip_special_tokens=True)
    if stop:
        cut = [text.find(s) for s in stop if s and s in text]
        if cut:
            text, finish = text[: min(cut)], "stop"
    return n_tok, text, finish


class PaddingSide:
    """Left padding and a pad token for the duration of a block (batching needs both); the tokenizer is restored."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def __enter__(self):
        self.side, self.pad = self.tok.padding_side, self.tok.pad_token
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        return self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id

    def __exit__(self, *exc):
        self.tok.padding_side = self.side
        if self.pad is None:
            self.tok.pad_token = None


class StopWatch:
    """Per-row stop-string check on the decoded tail: finds the first token that completes a stop string (what
    HF's StopStringCriteria stops at), decoding only the last few tokens of the row each step."""

    def __init__(self, tokenizer, stop: list[str] | None):
        self.tok = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.window = max((len(s) for s in self.stop), default=0) + 4  # tokens; every token is >= 1 character

    def hit(self, row: list[int]) -> bool:
        if not self.stop:
            return False
        # checked after every token, so the first step whose tail holds a stop string is the one that completed it
        tail = self.tok.decode(row[-self.window :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


def cut_at_stop(row: list[int], tokenizer, stop: list[str] | None) -> list[int]:
    """The row up to and including the first token whose text completes a stop string (HF's StopStringCriteria)."""
    sw = StopWatch(tokenizer, stop)
    if not sw.stop:
        return row
    for j in range(1, len(row) + 1):
        if sw.hit(row[:j]):
            return row[:j]
    return row
