"""Strict resume: a stage's output folder remembers the config that made it.

Every stage (train, pairs, neurons find, eval) calls `claim(folder, stage, config)` before it writes anything
else. The first call writes `folder/config.hash.json` ({stage, hash, config}); a later call with the same
config (location/verbosity keys aside) resumes; one with another config is refused with a one-line error
naming the keys that differ. `overwrite=True` empties the folder first (the user asked to start over).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

RECORD = "config.hash.json"

# keys that say where or how visibly a stage works; they do not make a different result
IGNORED = frozenset({"output_dir", "out_dir", "out", "progress", "name", "device", "num_workers"})


class ResumeConflict(ValueError):
    """The folder holds the output of another config."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def file_identity(path: str | None) -> str | None:
    """A file by name and content, not by location (a run folder may be moved): 'pairs.jsonl sha256:ab12..'."""
    from yfpo.utils import sha256_file

    if not path or not Path(path).is_file():
        return path
    if Path(path).suffix == ".json":  # a NeuronSet: its content, not when it was written
        try:
            obj = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            from yfpo.utils import stable_hash

            return f"{Path(path).name} content:{stable_hash(_undated(obj), n=16)}"
    return f"{Path(path).name} sha256:{sha256_file(path)[:16]}"


VOLATILE = frozenset({"date", "time_s", "started", "finished", "updated"})


def _undated(obj: Any) -> Any:
    """obj without its wall-clock keys (VOLATILE), at any depth."""
    if isinstance(obj, dict):
        return {k: _undated(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_undated(v) for v in obj]
    return obj


def model_identity(name_or_path: str) -> str:
    """A hub id / alias as itself; a local model folder by its folder name and a fingerprint of its files
    (size + sha256 of the first and last 4 MiB of each, whole small files), so two checkpoints differ."""
    import hashlib

    p = Path(name_or_path)
    if not p.is_dir():
        return name_or_path
    h = hashlib.sha256()
    for f in sorted(x for x in p.iterdir() if x.is_file() and x.suffix in (".json", ".safetensors", ".bin", ".model")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(4 << 20))
            if size > 8 << 20:
                fh.seek(-(4 << 20), 2)
                h.update(fh.read())
    return f"{p.name} files:{h.hexdigest()[:16]}"


def hashed_config(config: dict, ignored=IGNORED) -> dict:
    return {k: v for k, v in config.items() if k not in ignored}


def config_hash(config: dict, ignored=IGNORED) -> str:
    from yfpo.utils import stable_hash

    return stable_hash(json.loads(json.dumps(hashed_config(config, ignored), default=str)), n=16)


def diff_keys(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every (flattened) key whose value differs."""
    a, b = _flat(json.loads(json.dumps(old, default=str))), _flat(json.loads(json.dumps(new, default=str)))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check(folder: str | Path, stage: str, config: dict, *, ignored=IGNORED) -> str:
    """Raise ResumeConflict when `folder` was made by another `stage` config; returns this config's hash."""
    folder = Path(folder)
    h = config_hash(config, ignored)
    rec_path = folder / RECORD
    if not rec_path.exists():
        legacy = _legacy_config(folder)  # a folder from before config.hash.json: its saved config.yaml
        if legacy is not None and config_hash(legacy, ignored) != h:
            diff = diff_keys(hashed_config(legacy, ignored), hashed_config(config, ignored))
            raise ResumeConflict(
                f"{folder} was made by another {stage} config ({'; '.join(diff)}; from its "
                "config.yaml); refusing to resume into it: use a new output folder, or --overwrite"
            )
        return h
    try:
        rec = json.loads(rec_path.read_text())
    except json.JSONDecodeError:
        raise ResumeConflict(
            f"{rec_path}: not valid JSON; cannot tell which config made {folder} "
            "(use a new output folder, or --overwrite to start over)"
        ) from None
    if rec.get("stage") == stage and rec.get("hash") == h:
        return h
    if rec.get("stage") != stage:
        raise ResumeConflict(
            f"{folder} holds a {rec.get('stage')!r} stage, not {stage!r}; use a new output folder, "
            "or --overwrite to start over"
        )
    diff = diff_keys(rec.get("config", {}), hashed_config(config, ignored)) or ["(same keys, other hash)"]
    raise ResumeConflict(
        f"{folder} was made by another {stage} config ({'; '.join(diff)}); refusing to resume into "
        "it: use a new output folder, or --overwrite to start over"
    )


def claim(folder: str | Path, stage: str, config: dict, *, overwrite: bool = False, ignored=IGNORED) -> str:
    """check(), then record the config in the folder (emptied first when overwrite). Returns the hash."""
    from yfpo.utils import atomic_write_json, remove_stale_tmp

    folder = Path(folder)
    if overwrite and folder.exists():
        clear(folder)
    h = check(folder, stage, config, ignored=ignored)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(folder)  # a run killed mid-write left temp files
    if not (folder / RECORD).exists():
        atomic_write_json(folder / RECORD, {"stage": stage, "hash": h, "config": hashed_config(config, ignored)})
    return h


def clear(folder: Path) -> None:
    """Remove the folder's contents (not the folder: a pipeline may have written its stage.json in it)."""
    for p in folder.iterdir():
        if p.name == "stage.json":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _legacy_config(folder: Path) -> dict | None:
    import yaml

    p = folder / "config.yaml"
    if not p.exists():
        return None
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError:
        return None
    return d if isinstance(d, dict) else None
