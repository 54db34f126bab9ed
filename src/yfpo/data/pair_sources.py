"""Preference pairs from wherever they are, in TRL's formats or Step-DPO's.

    rows, fmt = read_pairs("pairs.parquet")          # [{"prompt", "chosen", "rejected", ...}], "standard"

A source is
  - a file: .jsonl, .json (a list of rows, or JSON lines), .parquet, .csv;
  - a folder written by `datasets` (`Dataset.save_to_disk`; a `DatasetDict` takes `folder@split`, default train);
  - a hub dataset id `owner/name[:subset][@split]` (split default train), read only from the local cache when the
    hub cannot be reached (or HF_HUB_OFFLINE=1): never a hang, one line when it is neither reachable nor cached.

Rows may be TRL's standard format (strings) or conversational format (lists of {"role", "content"} messages),
with an explicit `prompt` or an implicit one (no `prompt`: the shared start of chosen and rejected, found by TRL's
`extract_prompt`); or Step-DPO's (`prompt`, `initial_reason_steps`, `chosen`, `rejected`, all strings). One source
holds one format. The format decides the chat template: an explicit plain-string prompt is the raw question (the
trainer wraps it as a user turn); a conversational row is templated by TRL from its messages; an implicit plain-text
prompt is kept as the text it was inside the completions. A bad row fails with the source, the row and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

from trl.data_utils import extract_prompt

from yfpo.data.problems import DataFormatError, read_jsonl

FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")
FORMATS = ("standard", "conversational", "step")
HUB_ID = re.compile(r"^(?P<name>[\w.-]+/[\w.-]+)(?::(?P<subset>[\w.-]+))?(?:@(?P<split>[\w.\[\]:%+-]+))?$")


class PairSourceError(DataFormatError):
    """A pair source cannot be read (missing, offline and not cached, unknown type)."""


def read_pairs(source: str | os.PathLike, limit: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """(rows in TRL's column names, format) from any source; rows keep their extra columns."""
    fmt_first: tuple[str, str] | None = None
    out = []
    for where, row in _rows(str(source)):
        row = validate_row(row, where)
        fmt = row_format(row)
        if fmt_first is None:
            fmt_first = (where, fmt)
        elif fmt != fmt_first[1]:
            field = (
                "field 'initial_reason_steps' on some rows only"
                if "step" in (fmt, fmt_first[1])
                else "field 'chosen' a string on some rows, a message list on others"
            )
            raise DataFormatError(
                f"{where}: a {fmt} pair in a source whose first row ({fmt_first[0]}) is a {fmt_first[1]} pair "
                f"({field}); one source holds one format: split it"
            )
        out.append(row)
        if limit and len(out) >= limit:
            break
    if not out:
        raise DataFormatError(f"{source}: no pairs (the source is empty)")
    return out, fmt_first[1]


def row_format(row: dict) -> str:
    if "initial_reason_steps" in row:
        return "step"
    return "conversational" if isinstance(row["chosen"], list) else "standard"


def validate_row(obj: Any, where: str) -> dict:
    """One row -> the row with an explicit prompt (TRL's extract_prompt for implicit ones), or DataFormatError naming
    where and the field."""
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a mapping with chosen and rejected, got {type(obj).__name__}")
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise DataFormatError(f"{where}: missing field {key!r} (a pair needs chosen and rejected, and a prompt)")
    conv = isinstance(obj["chosen"], list)
    keys = ("prompt", "chosen", "rejected") if "prompt" in obj else ("chosen", "rejected")
    for key in keys:
        _check_field(obj[key], key, where, conv)
    if "initial_reason_steps" in obj:
        if conv or "prompt" not in obj:
            raise DataFormatError(f"{where}: a Step-DPO pair needs string fields prompt, initial_reason_steps, ...")
        _check_field(obj["initial_reason_steps"], "initial_reason_steps", where, False, empty_ok=True)
    row = dict(obj)
    if "prompt" not in row:  # implicit prompt: the shared start of chosen and rejected
        row.update(extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]}))
        row["implicit_prompt"] = True
        if not row["prompt"]:
            raise DataFormatError(f"{where}: no 'prompt', and chosen and rejected share no beginning to take as one")
        for key in ("chosen", "rejected"):
            if not row[key]:
                raise DataFormatError(f"{where}: field {key!r} is all prompt (nothing after the shared beginning)")
    if row["chosen"] == row["rejected"]:
        raise DataFormatError(
            f"{where}: fields 'chosen' and 'rejected' are identical; a pair needs two different responses"
        )
    return row


def _check_field(value: Any, key: str, where: str, conv: bool, empty_ok: bool = False) -> None:
    if conv:
        if not isinstance(value, list) or not value:
            raise DataFormatError(f"{where}: field {key!r} must be a non-empty list of messages, got {value!r:.60}")
        for i, m in enumerate(value):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataFormatError(
                    f"{where}: field {key!r} message {i}: expected {{'role': str, 'content': str}}, got {m!r:.80}"
                )
        return
    if not isinstance(value, str):
        raise DataFormatError(
            f"{where}: field {key!r} must be a string (or, in every field, a list of messages), "
            f"got {type(value).__name__}"
        )
    if not empty_ok and not value.strip():
        raise DataFormatError(f"{where}: field {key!r} is empty; expected non-empty text")


# ---------------------------------------------------------------- readers


def _rows(source: str):
    """(where, row) of every row of the source."""
    path, split = _split_suffix(source)
    p = Path(path)
    if p.is_file():
        yield from _file_rows(p)
    elif p.is_dir():
        yield from _disk_rows(p, split)
    elif p.suffix.lower() in FILE_TYPES or path.startswith((".", "/", "~")) or not HUB_ID.match(source):
        raise PairSourceError(f"pairs {source}: no such file or folder (nor a hub id owner/name[:subset][@split])")
    else:
        yield from _hub_rows(source)


def _split_suffix(source: str) -> tuple[str, str | None]:
    """'folder@test' -> ('folder', 'test') when folder exists; anything else unchanged."""
    head, sep, split = source.rpartition("@")
    if sep and Path(head).is_dir():
        return head, split
    return source, None


def _file_rows(p: Path):
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        for n, obj in read_jsonl(p):
            yield f"{p}:{n}", obj
    elif suffix == ".json":
        text = p.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # JSON lines under a .json name
            for n, obj in read_jsonl(p):
                yield f"{p}:{n}", obj
            return
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:  # columns
            n = len(next(iter(data.values())))
            data = [{k: v[i] for k, v in data.items()} for i in range(n)]
        if not isinstance(data, list):
            raise DataFormatError(f"{p}: expected a JSON list of pairs (or JSON lines), got {type(data).__name__}")
        for i, obj in enumerate(data):
            yield f"{p} row {i + 1}", obj
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, obj in enumerate(pq.read_table(p).to_pylist()):
            yield f"{p} row {i + 1}", obj
    elif suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            for i, obj in enumerate(csv.DictReader(f)):
                yield f"{p} row {i + 1}", obj
    else:
        raise PairSourceError(f"pairs {p}: unknown file type {suffix!r}; expected one of {', '.join(FILE_TYPES)}")


def _disk_rows(p: Path, split: str | None):
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError:
        raise PairSourceError(
            f"pairs {p}: a folder, but not one written by datasets' save_to_disk (no dataset_info.json / "
            "state.json); give a file or such a folder"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        split = split or "train"
        if split not in ds:
            raise PairSourceError(f"pairs {p}: no split {split!r}; it has {', '.join(ds)} (choose one: {p}@SPLIT)")
        ds = ds[split]
    elif split:
        raise PairSourceError(f"pairs {p}@{split}: the folder holds one dataset, not splits")
    for i, obj in enumerate(ds):
        yield f"{p} row {i + 1}", obj


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers on 443 within `timeout` s (name lookup included: run in a thread)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    ok = [False]

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return ok[0]


def _hub_rows(source: str):
    import datasets

    m = HUB_ID.match(source)
    name, subset, split = m["name"], m["subset"], m["split"] or "train"
    online = hub_reachable()
    with _hub_offline(not online):
        try:
            ds = datasets.load_dataset(name, subset, split=split)
        except Exception as e:  # datasets raises many types for "not cached" / "no such dataset"
            if not online:
                raise PairSourceError(
                    f"pairs {source}: no such file or folder; as a hub dataset: the hub is not reachable (offline) "
                    f"and {name} is not in the local cache "
                    f"({datasets.config.HF_DATASETS_CACHE}); download it where there is network, or give a file / "
                    "a save_to_disk folder"
                ) from None
            raise PairSourceError(f"pairs {source}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    for i, obj in enumerate(ds):
        yield f"{source} row {i + 1}", obj


class _hub_offline:
    """datasets / huggingface_hub in offline mode for one call (their flags are read at import, not from env)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if not self.on:
            return
        import datasets
        import huggingface_hub.constants as hc

        self.saved = (datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
        datasets.config.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"

    def __exit__(self, *exc):
        if not self.on:
            return
        import datasets
        import huggingface_hub.constants as hc

        datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE, env = self.saved
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def source_identity(source: str | os.PathLike | None) -> str | None:
    """A pair source by content where it is on disk: a file as yfpo.resume.file_identity has it, a folder by the
    sha256 of its files (names and bytes), a hub id as itself."""
    from yfpo.resume import file_identity

    if not source:
        return source
    path, split = _split_suffix(str(source))
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return f"{p.name}{'@' + split if split else ''} files:{h.hexdigest()[:16]}"
    return file_identity(str(source))
