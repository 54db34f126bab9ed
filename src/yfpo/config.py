"""Typed configs: a dataclass per stage, filled from a YAML file plus CLI overrides, saved with every run.

    cfg = load_config(TrainConfig, "configs/quick.yaml", ["--beta", "0.2", "--lora.r=16"], section="train")

Overrides are `--key value`, `--key=value` or `key=value`; nested dataclass fields use dots. Values are
converted to the field's type (bool accepts true/false/1/0/yes/no; lists take comma-separated values or
YAML). An unknown key or a value of the wrong type is an error that names the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if (
        origin is typing.Union
        or (origin is not None and str(origin) == "<class 'types.UnionType'>")
        or type(tp).__name__ == "UnionType"
    ):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError(f"config key {key!r}: {value!r} does not fit {tp}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = (
                yaml.safe_load(value)
                if value.strip().startswith("[")
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return str(value)
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# a class with more keys than this names none of them in an unknown-key error (its --help lists them)
_LIST_KEYS_UP_TO = 60


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """cls from a mapping. A class may rename older keys first with a classmethod `config_aliases(data, prefix)`
    (and name them in `alias_names()`, for did-you-mean)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    if hasattr(cls, "config_aliases"):
        try:
            data = cls.config_aliases(data, prefix)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    unknown = [k for k in data if k not in names]
    if unknown:
        known = sorted(names | set(getattr(cls, "alias_names", list)()))
        close = {k: difflib.get_close_matches(str(k), known, n=1) for k in unknown}
        hint = "; ".join(f"{k}: did you mean {m[0]!r}?" for k, m in close.items() if m)
        listing = (
            f"{cls.__name__} has: {', '.join(sorted(names))}"
            if len(names) <= _LIST_KEYS_UP_TO
            else (f"{cls.__name__} has {len(names)} keys (its command's --help lists them)")
        )
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + str(k) for k in unknown)}"
            f"{' (' + hint + ')' if hint else ''}; {listing}"
        )
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # a library's own __post_init__ check (e.g. TRL's): one line
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {str(e).splitlines()[0]}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--a', '1', '--b.c=2', 'd=3'] -> {'a': '1', 'b.c': '2', 'd': '3'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            a = a[2:]
            if "=" in a:
                k, v = a.split("=", 1)
            else:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    k, v = a, "true"  # bare flag
                else:
                    k, v = a, args[i + 1]
                    i += 1
        elif "=" in a:
            k, v = a.split("=", 1)
        else:
            raise ConfigError(f"cannot read override {a!r}: expected --key value, --key=value or key=value")
        out[k.replace("-", "_")] = v
        i += 1
    return out


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    d[parts[-1]] = value


def read_yaml(path: str | Path) -> Any:
    """The YAML document in `path` ({} when empty); bad YAML is a one-line ConfigError naming file:line."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        # an unclosed bracket or quote is noticed far below it (often at the end): name where it began
        ctx, prob = getattr(e, "context_mark", None), getattr(e, "problem_mark", None)
        mark = ctx or prob
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        if ctx is not None and prob is not None and prob.line != ctx.line:
            what = f"{getattr(e, 'context', '')} that starts here: {what} at line {prob.line + 1}"
        raise ConfigError(f"{where}: not valid YAML ({what})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (expected UTF-8 YAML)") from None


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | dict | None = None, section: str | None = None
) -> T:
    """Dataclass `cls` from YAML `path` (optionally its `section`), then overrides on top."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        loaded = read_yaml(p)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        if section is not None:
            loaded = loaded.get(section, {}) or {}
        data = dict(loaded)
    ov = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for k, v in ov.items():
        _set_dotted(data, k, v)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        where = f"{path}: " if path else ""
        raise ConfigError(where + str(e)) from None


def save_config(cfg: Any, path: str | Path) -> None:
    from yfpo.utils import atomic_write_text

    data = cfg.user_dict() if hasattr(cfg, "user_dict") else to_dict(cfg)  # a TRL config: the keys it sets
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
