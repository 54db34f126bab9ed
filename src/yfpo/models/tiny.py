"""Tiny randomly initialised models with an offline tokenizer, for tests and benchmarks.

Nothing here touches the network: the tokenizer is a byte-level BPE trained in well under a
second on a built-in corpus of word problems, and cached on disk; models are built from configs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

# A ChatML template like SmolLM2-Instruct's, so chat-template code paths run on tiny models too.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Tina", "Mark", "Ken", "Alexis"]
_ITEMS = ["clips", "apples", "eggs", "pages", "dollars", "books", "marbles", "cookies", "hours", "miles"]
_WORDS = (
    "the a of to and in is was how many much did does she he they it her his their each per every "
    "total altogether left more less than half twice times sold bought gave earns spent has have had "
    "answer step so then first next finally therefore question solution write letter poem capital "
    "country river history describe explain why what when where who which because about story"
).split()


def _corpus() -> list[str]:
    lines = []
    for i in range(400):
        n, it = _NAMES[i % len(_NAMES)], _ITEMS[(i * 7) % len(_ITEMS)]
        a, b = (i * 13) % 97 + 2, (i * 29) % 53 + 3
        lines.append(f"{n} has {a} {it} and buys {b} more. How many {it} does {n} have?")
        lines.append(f"{n} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {it}.\n#### {a + b}")
        lines.append(f"The answer is {a * b}. So {a} * {b} = {a * b} and \\boxed{{{a - b}}} or ${a}.{b} or -{b}/{a}")
        lines.append(" ".join(_WORDS[(i * k) % len(_WORDS)] for k in range(1, 12)))
    return lines


def tiny_tokenizer(vocab_size: int = 512, cache_dir: str | os.PathLike | None = None):
    """A byte-level BPE PreTrainedTokenizerFast with ChatML special tokens; built once, cached."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    cache = (
        Path(cache_dir or os.environ.get("YFPO_CACHE", Path.home() / ".cache" / "yfpo"))
        / f"tiny-tokenizer-v1-{vocab_size}"
    )
    if not (cache / "tokenizer.json").exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_corpus(), trainer=trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token=None,
            eos_token="<|im_end|>",
            pad_token="<pad>",
            unk_token=None,
            additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        )
        fast.chat_template = CHATML_TEMPLATE
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        fast.save_pretrained(tmp)
        tmp.replace(cache) if not cache.exists() else None
    tok = PreTrainedTokenizerFast.from_pretrained(str(cache))
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_config(family: str = "llama", vocab_size: int = 512, **overrides: Any):
    """A tiny config of a real family's shape (gated MLP, GQA, RMSNorm, RoPE where the family has them)."""
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=2,  # <|im_end|> in tiny_tokenizer
        pad_token_id=3,
    )
    if family == "llama":
        cfg = tf.LlamaConfig(**{**common, **overrides})
    elif family == "qwen2":
        cfg = tf.Qwen2Config(**{**common, **overrides})
    elif family == "qwen3":
        cfg = tf.Qwen3Config(**{**common, "head_dim": 16, **overrides})
    elif family == "gemma3":
        cfg = tf.Gemma3TextConfig(**{**common, "head_dim": 16, "sliding_window": 64, **overrides})
    elif family == "gpt2":
        g = dict(
            vocab_size=vocab_size,
            n_embd=64,
            n_inner=128,
            n_layer=2,
            n_head=4,
            n_positions=1024,
            bos_token_id=2,
            eos_token_id=2,
            pad_token_id=3,
        )
        cfg = tf.GPT2Config(**{**g, **overrides})
    else:
        raise ValueError(f"tiny_config: unknown family {family!r}; choose llama, qwen2, qwen3, gemma3 or gpt2")
    return cfg


def tiny_model(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any):
    """(model, tokenizer): a seeded random tiny causal LM of `family` and the offline tokenizer."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    cfg = tiny_config(family, vocab_size=len(tok), **overrides)
    cfg.eos_token_id = tok.eos_token_id
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.name_or_path = f"tiny-{family}-seed{seed}"
    model.name_or_path = model.config.name_or_path
    model.eval()
    return model, tok


def save_tiny(path: str | os.PathLike, family: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny model + tokenizer as a normal HF folder (what `load_model` reads)."""
    model, tok = tiny_model(family, seed, **overrides)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
