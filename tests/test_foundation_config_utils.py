from dataclasses import dataclass, field

import pytest

from yfpo.config import ConfigError, load_config, parse_overrides, save_config
from yfpo.utils import append_jsonl, read_jsonl_resume, stable_hash


@dataclass
class Inner:
    r: int = 8
    targets: list[str] = field(default_factory=lambda: ["q_proj"])


@dataclass
class Cfg:
    model: str = "default"
    beta: float = 0.1
    lora: bool = False
    k: int | float = 100
    out: str | None = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_plus_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  beta: 0.2\n  inner: {r: 4}\n")
    cfg = load_config(Cfg, y, ["--lora", "--inner.r=16", "k=0.5", "--inner.targets", "a,b"], section="train")
    assert cfg.beta == 0.2 and cfg.lora is True and cfg.inner.r == 16 and cfg.k == 0.5
    assert cfg.inner.targets == ["a", "b"]
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(Cfg, tmp_path / "saved.yaml") == cfg


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key.*bta.*did you mean 'beta'"):
        load_config(Cfg, None, ["--bta", "1"])
    with pytest.raises(ConfigError) as e:  # nothing close: no guess
        load_config(Cfg, None, ["--zzzzzz", "1"])
    assert "did you mean" not in str(e.value)
    with pytest.raises(ConfigError, match="'beta': expected a number"):
        load_config(Cfg, None, ["--beta", "high"])
    with pytest.raises(ConfigError, match="'inner.r': expected an integer"):
        load_config(Cfg, None, ["--inner.r", "2.5"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "none.yaml")
    assert parse_overrides(["--a-b", "1", "c=2", "--flag"]) == {"a_b": "1", "c": "2", "flag": "true"}


def test_append_jsonl_resume_drops_torn_tail(tmp_path):
    f = tmp_path / "x.jsonl"
    append_jsonl(f, [{"i": 0}, {"i": 1}])
    with open(f, "a") as h:
        h.write('{"i": 2, "partial')  # a kill in the middle of a write
    assert read_jsonl_resume(f) == [{"i": 0}, {"i": 1}]
    append_jsonl(f, [{"i": 2}])
    assert read_jsonl_resume(f) == [{"i": 0}, {"i": 1}, {"i": 2}]
    f.write_text('{"i": 0}\n{broken\n{"i": 2}\n')
    with pytest.raises(ValueError, match="x.jsonl:2"):
        read_jsonl_resume(f)


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
