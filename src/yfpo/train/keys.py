"""TrainConfig's keys for people: grouped like TRL's documentation, with their defaults, and did-you-mean.

The groups: yfpo's own (from each field's `metadata["group"]`), the TRL options yfpo gives another default, TRL's
DPOConfig sections (its docstring's "> Parameters that control ..." headings), and transformers' TrainingArguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

from transformers import TrainingArguments
from trl import DPOConfig

from yfpo.train.config import ALIASES, G_DEFAULTS, TrainConfig, _defaults


def _trl_sections() -> dict[str, str]:
    """DPOConfig field -> its docstring section ("TRL: model", "TRL: data preprocessing", ...)."""
    out, section = {}, None
    for line in (DPOConfig.__doc__ or "").splitlines():
        head = re.match(r"\s*> Parameters that control (?:the )?(.+)", line)
        if head:
            section = f"TRL DPOConfig: {head.group(1).strip()}"
            continue
        if re.match(r"\s*> Deprecated", line):
            section = "TRL DPOConfig: deprecated"
            continue
        name = re.match(r"\s{8}(\w+) \(", line)
        if name and section:
            out[name.group(1)] = section
    return out


def key_groups() -> list[tuple[str, list[tuple[dataclasses.Field, object]]]]:
    """[(group title, [(field, default), ...]), ...] for every init field of TrainConfig, yfpo's groups first."""
    defaults = _defaults()
    trl = _trl_sections()
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    groups: dict[str, list] = {}
    for f in dataclasses.fields(TrainConfig):
        if not f.init:
            continue
        title = f.metadata.get("group") or trl.get(f.name)
        if title is None:
            title = "transformers TrainingArguments" if f.name in base else "TRL DPOConfig"
        groups.setdefault(title, []).append((f, defaults.get(f.name)))
    order = [t for t in groups if t.startswith("yfpo")] + [G_DEFAULTS]
    order += list(dict.fromkeys(trl.values())) + ["TRL DPOConfig", "transformers TrainingArguments"]
    return [(t, groups[t]) for t in order if t in groups]


def names() -> list[str]:
    return sorted({f.name for f in dataclasses.fields(TrainConfig) if f.init} | set(ALIASES) | {"trl"})


def did_you_mean(flags: list[str]) -> str:
    """' (--lerning_rate: did you mean --learning_rate?)' for the flags with a close key, else ''."""
    known = names()
    hints = []
    for flag in flags:
        key = flag.lstrip("-").replace("-", "_")
        m = difflib.get_close_matches(key, known, n=1)
        if m:
            hints.append(f"{flag}: did you mean --{m[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""
