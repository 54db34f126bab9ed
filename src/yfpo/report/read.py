"""Reading a `yfpo run` directory: run.json + the stage folders, in their documented schemas.

Stages that have not finished are kept out (their outputs may be partial), so a partial run still reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yfpo.utils import read_jsonl_resume, read_metrics


@dataclass
class RunData:
    dir: Path
    index: dict
    config: dict
    neurons: Path | None = None
    check: dict | None = None
    check_png: Path | None = None
    pairs: dict | None = None
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # "method-s<seed>" -> rows
    evals: dict[tuple[str, Any, str], dict] = field(default_factory=dict)  # (method, seed, bench) -> {summary, items}
    disc: dict[tuple[str, Any], dict] = field(default_factory=dict)  # (method, seed) -> discrimination.json
    stages: list[dict] = field(default_factory=list)


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl_resume(path) if path.exists() else []


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _read_check(rd: RunData, folder: Path) -> None:
    rec = _read_json(folder / "done.json")
    cj = folder / "check.json"
    rd.check = _read_json(cj) if cj.exists() else rec.get("outputs", {})
    png = (rec.get("outputs", {}).get("paths") or {}).get("png")
    if png and (rd.dir / png).exists():
        rd.check_png = rd.dir / png
    elif list(folder.glob("*.png")):
        rd.check_png = sorted(folder.glob("*.png"))[0]


def _read_stage(rd: RunData, s: dict) -> None:
    folder = rd.dir / s["dir"]
    kind, finished = s["kind"], s["finished"]
    if kind == "neurons" and (folder / "neurons.json").exists():
        rd.neurons = folder / "neurons.json"
    elif kind == "check" and finished:
        _read_check(rd, folder)
    elif kind == "pairs" and (folder / "summary.json").exists():
        rd.pairs = _read_json(folder / "summary.json")
    elif kind == "train":
        mpath = folder / "metrics.jsonl"
        rows = read_metrics(mpath) if mpath.exists() else []  # one curve: replayed steps once, no end summary
        if rows:
            rd.metrics[f"{s['method']}-s{s['seed']}"] = rows
    elif kind == "eval" and finished and (folder / "summary.json").exists():
        rd.evals[(s["method"], s["seed"], s["bench"])] = {
            "summary": _read_json(folder / "summary.json"),
            "items": _jsonl(folder / "items.jsonl"),
        }
    elif kind == "discrimination" and finished and (folder / "discrimination.json").exists():
        rd.disc[(s["method"], s["seed"])] = _read_json(folder / "discrimination.json")
    elif kind == "mmlu" and finished and (folder / "mmlu.json").exists():
        _read_mmlu(rd, s, _read_json(folder / "mmlu.json"))


MMLU_PARTS = ("non_math", "redux_ok")


def _read_mmlu(rd: RunData, s: dict, m: dict) -> None:
    """MMLU retention as two benches (mmlu_non_math, mmlu_redux_ok) in the evals' shape, extractor "letter", so
    the comparison table, the paired tests and the verdicts treat them like any benchmark."""
    for part in MMLU_PARTS:
        if part not in m:
            continue
        items = [
            {"id": it["id"], "correct": {"letter": bool(it["correct"])}} for it in (m.get("items") or {}).get(part, [])
        ]
        rd.evals[(s["method"], s["seed"], f"mmlu_{part}")] = {
            "summary": {
                "bench": f"mmlu_{part}",
                "primary": "letter",
                "n": m[part]["n"],
                "accuracy": {"letter": m[part]},
                "protocol": m.get("protocol", {}),
            },
            "items": items,
        }


def read_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    idx_path = run_dir / "run.json"
    if not idx_path.exists():
        raise FileNotFoundError(f"{idx_path} does not exist; is {run_dir} a `yfpo run` directory?")
    index = _read_json(idx_path)
    rd = RunData(dir=run_dir, index=index, config=index.get("config", {}), stages=index.get("stages", []))
    for s in rd.stages:
        done = run_dir / s["dir"] / "done.json"
        s["finished"] = done.exists()
        if s["finished"] and s.get("time_s") is None:  # a cached stage: the time it took when it ran
            rec = _read_json(done)
            if isinstance(rec.get("time_s"), (int, float)):
                s["time_s"] = rec["time_s"]
        _read_stage(rd, s)
    return rd
