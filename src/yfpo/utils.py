"""Small helpers every stage uses: atomic writes, hashing, library versions, seeding, progress."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file + rename, so an interrupted write never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{_writer()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _writer() -> str:
    """The temp-file tag of this writer: process id, and thread (two threads may write the same file)."""
    import threading

    return f"{os.getpid()}t{threading.get_ident() % 1000003}"


_TMP = __import__("re").compile(r"^\..+\.tmp(\d+)(?:t\d+)?(\.[A-Za-z0-9]+)?$")


def remove_stale_tmp(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temp files of atomic writes whose writer is gone (a process killed mid-write leaves
    `.NAME.tmpPID`): a resumed stage then leaves exactly what an uninterrupted one would. Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*"):
        m = _TMP.match(p.name)
        if not m or not p.is_file():
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # its writer is alive (another process on this folder)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append whole lines and fsync: a kill leaves at most one partial trailing line (see read_jsonl_resume)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl_resume(path: str | os.PathLike) -> list[dict]:
    """Rows of an append-only JSONL written by append_jsonl; a torn last line (from a kill) is dropped
    and truncated away so the next append starts clean. A torn line elsewhere is an error."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, good_len = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_len += len(line) + (1 if i < len(lines) - 1 else 0)
            continue
        try:
            rows.append(json.loads(line))
            good_len += len(line) + 1
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn tail
                with open(path, "r+b") as f:
                    f.truncate(good_len)
                break
            raise ValueError(f"{path}:{i + 1}: not valid JSON (file damaged in the middle; not a torn tail)") from None
    return rows


def sha256_text(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 12) -> str:
    """Hash of a JSON-able object, independent of dict key order."""
    return sha256_text(json.dumps(obj, sort_keys=True, default=str))[:n]


def versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, plus machine facts."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": str(os.cpu_count())}
    for pkg in ("yfpo", "torch", "transformers", "accelerate", "peft", "trl", "math-verify", "vllm", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import torch

        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        out["torch_threads"] = str(torch.get_num_threads())
    except Exception:
        pass
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None):
    """A tqdm bar (stderr); disabled when YFPO_NO_PROGRESS=1."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = os.environ.get("YFPO_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a trainer's append-only metrics.jsonl, as one clean curve.

    A resumed run appends a marker {"event": "resume", "step": N} and then replays the steps after its
    checkpoint N: rows logged after N before the marker (lost with the kill) are dropped, as is the
    end-of-training summary row (train_runtime). A torn last line is repaired (read_jsonl_resume)."""
    rows: list[dict] = []
    for r in read_jsonl_resume(path):
        if r.get("event") == "resume":
            rows = [x for x in rows if x.get("step", 0) <= r.get("step", 0)]
        elif "train_runtime" not in r:
            rows.append(r)
    return rows


def atomic_savefig(fig, path: str | os.PathLike, **kw) -> None:
    """fig.savefig through a temp file + rename, so a kill never leaves a half PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{_writer()}{path.suffix}")
    fig.savefig(tmp, **kw)
    tmp.replace(path)
