"""CI-sized subset of scripts/fault_injection.py: the output comparison, one SIGKILL-and-resume trial on the
eval and report commands (killed while their output shows work in progress), and every row of the malformed-input table (in-process, a few seconds each)."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "scripts" / "fault_injection.py")
fi = importlib.util.module_from_spec(_spec)
sys.modules["fault_injection"] = fi
_spec.loader.exec_module(fi)

# Rows that fail on this branch (h8) and are meant to pass once the input-validation work of issue 11.3 (on
# another branch, in parallel) is merged: measured with scripts/fault_injection.py --malformed, see
# docs/reliability.md. strict xfail: a row that starts passing fails here, so its id must then be removed.
KNOWN_FAILING: set[str] = set()  # every row passes since the issue-11.3 validation was merged


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fi.make_fixtures(tmp_path_factory.mktemp("fx"))


def test_compare_trees_ignores_times_and_finds_real_differences(tmp_path):
    import torch
    from safetensors.torch import save_file

    a, b = tmp_path / "a", tmp_path / "b"
    for d, t, w in ((a, "2026-01-01T10:00:00", 1.0), (b, "2026-02-02T11:11:11", 1.0)):
        d.mkdir()
        (d / "s.json").write_text(json.dumps({"acc": 0.5, "time_s": t[-2:], "date": t}))
        (d / "r.md").write_text(f"built {t}\nacc 0.5\n")
        save_file({"w": torch.full((3,), w)}, d / "m.safetensors")
    assert fi.compare_trees(a, b) == []
    save_file({"w": torch.tensor([1.0, 1.0, 1.0 + 2**-20])}, b / "m.safetensors")  # one ulp-scale change
    (b / "s.json").write_text(json.dumps({"acc": 0.51, "time_s": "1", "date": "x"}))
    (b / "x.tmp").write_text("")
    bad = fi.compare_trees(a, b)
    assert "differs: m.safetensors" in bad and "differs: s.json" in bad
    assert any("temporary file" in x for x in bad)
    (b / "r.md").unlink()
    assert "missing after resume: r.md" in fi.compare_trees(a, b)


@pytest.mark.parametrize("target", ["eval", "report"])
def test_sigkill_and_resume_matches_uninterrupted(target, fx, tmp_path):
    r = fi.fault_inject(
        fi.TARGETS[target],
        fx,
        tmp_path,
        trials=1,
        rng=random.Random(1),
        t_start=fi.startup_time(),
        log=lambda m: None,
        max_kills=1,
        mid_work=True,
    )
    # killed while its output showed work in progress (never a run that had finished before the kill)
    assert r.trials == 1 and r.resumes == 1 and r.kills == 1 and r.finished_before_kill == 0
    assert r.mismatched_trials == 0, r.mismatches


def test_malformed_table_is_large_and_covers_every_file_type():
    kinds = {c.kind for c in fi.MALFORMED}
    assert len(fi.MALFORMED) >= 30 and len({c.id for c in fi.MALFORMED}) == len(fi.MALFORMED)
    for k in (
        "pairs",
        "Step-DPO pairs",
        "benchmark (GSM8K format)",
        "NeuronSet",
        "run YAML",
        "train YAML",
        "CLI value",
    ):
        assert k in kinds
    assert KNOWN_FAILING <= {c.id for c in fi.MALFORMED}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c.id,
            marks=[pytest.mark.xfail(strict=True, reason="fails on this branch; issue 11.3 (see KNOWN_FAILING)")]
            if c.id in KNOWN_FAILING
            else [],
        )
        for c in fi.MALFORMED
    ],
)
def test_malformed_input_one_line_error_and_nothing_written(case, fx, tmp_path):
    ok, msg = fi.check_case(case, fx, tmp_path)
    assert ok, msg
