"""report/eval_sections.py on summaries made by the real summarize()."""

from __future__ import annotations

from yfpo.eval.bench import summarize
from yfpo.eval.sampled import item_metrics
from yfpo.grading import EXTRACTORS
from yfpo.report.eval_sections import (
    group_table,
    length_table,
    markdown_table,
    no_answer_table,
    robustness_table,
    sampled_table,
)


def _row(i, ok, group=None, no_answer=None, samples=None):
    r = {
        "id": str(i),
        "n_tokens": 10 + i,
        "correct": {e: ok for e in EXTRACTORS},
        "extracted": {e: "1" for e in EXTRACTORS},
    }
    if group is not None:
        r["group"] = group
    if no_answer is not None:
        r["no_answer"] = no_answer
    if samples is not None:
        r["samples"] = [
            {"n_tokens": 5, "correct": {e: c for e in EXTRACTORS}, "extracted": {e: str(int(c)) for e in EXTRACTORS}}
            for c in samples
        ]
        r["sampled"] = item_metrics(r["samples"], EXTRACTORS)
    return r


def test_sections_from_summaries():
    greedy = summarize(
        [_row(0, True, "a", False), _row(1, False, "b", True), _row(2, True, "a", False)],
        "t",
        "m",
        {"template": "self-doubt-v1", "decoding": "greedy"},
    )
    sampled = summarize(
        [_row(0, True, samples=[True, False]), _row(1, False, samples=[False, False])],
        "t",
        "m",
        {"template": "chat-zero-shot-cot-v1", "decoding": "sampling"},
    )
    h, rows = group_table({"g": greedy})
    assert [r[:3] for r in rows] == [["g", "a", "2"], ["g", "b", "1"]] and rows[0][3].startswith("100.0")
    h, rows = sampled_table({"s": sampled, "g": greedy})
    assert "pass@2 %" in h and "maj@1 %" in h and len(rows) == 1 and rows[0][3].startswith("25.0")
    h, rows = no_answer_table({"g": greedy})
    assert (
        rows == [["g", "2", rows[0][2], "1", rows[0][4], "—"]]
        and rows[0][2].startswith("100.0")
        and rows[0][4].startswith("0.0")
    )
    # outputs that answered and abstained at once (grading's `conflicted`) are counted apart, in their own column
    mixed = [_row(0, True, "a", False), _row(1, False, "b", True) | {"conflicted": True}, _row(2, False, "a", False)]
    h, rows = no_answer_table({"c": summarize(mixed, "t", "m", {"template": "t", "decoding": "greedy"})})
    assert h[-1] == "answered and abstained (graded neither)" and rows[0][-1] == "1"
    h, rows = length_table({"g": greedy, "s": sampled})
    assert rows[0][1] == "self-doubt-v1" and rows[0][4] == "11.0" and rows[1][4] == "5.0"
    assert group_table({"s": sampled}) is None and no_answer_table({"s": sampled}) is None
    rob = {
        "pool": 50,
        "pool_accuracy": 0.6,
        "attacked": 30,
        "attack_success_rate": 0.4,
        "accuracy_before": 1.0,
        "accuracy_after": 0.6,
        "queries_mean": 7.5,
        "length_change_success": 3.0,
    }
    md = markdown_table(robustness_table({"default": rob}))
    assert "| default | 50 | 60.0 | 30 | 40.0 | 100.0 -> 60.0 | 7.5 | +3.0 |" in md
    assert markdown_table(None) == ""
