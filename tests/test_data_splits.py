"""The deduplicated word-problem split (yfpo.data.splits) on a small data folder written here."""

from __future__ import annotations

import json

import pytest

from yfpo.data import splits
from yfpo.data.problems import benchmark_provenance, load_benchmark


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    stories = [
        f"Kim has {i} {w} and buys {i + 3} more {w}. How many {w} does Kim have?"
        for i, w in zip(range(10, 40), ["apples", "pears", "cards", "pens", "cups", "hats"] * 5)
    ]
    _write(d / "mawps" / "addsub.jsonl", [{"input": q, "target": 2 * i + 13} for i, q in zip(range(10, 40), stories)])
    _write(d / "mawps" / "multiarith.jsonl", [{"input": "Tom has 2 boxes of 7 toys . How many toys ?", "target": 14}])
    _write(
        d / "mawps" / "singleeq.jsonl",
        [
            {"input": stories[0].upper(), "target": 33},  # same text, other case: a duplicate (text)
            {"input": "Kim owns 10 apples; later she buys 13 apples more. How many apples now?", "target": 23},
        ],
    )
    _write(d / "mawps" / "singleop.jsonl", [{"input": "Sam had 5 red and 9 blue cars. How many cars?", "target": 14}])
    _write(
        d / "asdiv" / "asdiv.jsonl",
        [
            {
                "id": "a1",
                "body": "Sam had five red and nine blue cars.",
                "question": "How many cars?",
                "answer": "14 (cars)",
            },
            {"id": "a2", "body": "Ann is taller than Bo.", "question": "Who is taller?", "answer": "Ann"},
            {
                "id": "a3",
                "body": "Eve read 44 pages on Monday and 17 on Tuesday.",
                "question": "How many pages?",
                "answer": "61 (pages)",
            },
            {"id": "a4", "body": "A bag has 5 marbles and another has 9 shells.", "question": "Fun?", "answer": "1"},
        ],
    )
    _write(
        d / "svamp" / "test.jsonl",
        [
            {
                "ID": "s1",
                "Body": "Eve read 44 pages on Monday and 17 pages on Tuesday",
                "Question": "How many more pages on Monday?",
                "Answer": 27.0,
            }
        ],
    )
    _write(
        d / "gsm8k" / "test.jsonl", [{"question": "Tom has 2 boxes of 7 toys. How many toys?", "answer": "x\n#### 14"}]
    )
    return d


def test_split_drops_contamination_and_duplicates_and_is_deterministic(data):
    parts, rep = splits.build_split(data, seed=0, n_test=5, n_val=5)
    why = {d["id"]: (d["why"], d.get("rule"), d.get("matches")) for d in rep["dropped"]}
    assert why["asdiv:a2"] == ("answer not a number", None, None)
    assert why["mawps_multiarith-0"] == ("evaluation set", "text", "gsm8k:gsm8k-0")  # GSM8K test, other spacing
    assert why["asdiv:a3"] == ("evaluation set", "numbers", "svamp:s1")  # SVAMP's variation of it
    assert why["mawps_singleeq-0"] == ("duplicate in pool", "text", "mawps_addsub-0")
    assert why["mawps_singleeq-1"] == ("duplicate in pool", "numbers", "mawps_addsub-0")
    assert why["asdiv:a1"] == ("duplicate in pool", "text", "mawps_singleop-0")  # number words read as digits
    assert "asdiv:a4" not in why  # the same numbers in an unrelated story are kept
    ids = [[p.id for p in parts[k]] for k in splits.PARTS]
    assert [len(x) for x in ids] == [32 - 10, 5, 5] and len({i for x in ids for i in x}) == 32
    assert rep["dropped_counts"] == {
        "answer not a number": 1,
        "evaluation set (text)": 1,
        "evaluation set (numbers)": 1,
        "duplicate in pool (text)": 2,
        "duplicate in pool (numbers)": 1,
    }
    again, _ = splits.build_split(data, seed=0, n_test=5, n_val=5)
    assert [[p.id for p in again[k]] for k in splits.PARTS] == ids
    other, _ = splits.build_split(data, seed=1, n_test=5, n_val=5)
    assert [p.id for p in other["test"]] != ids[2]
    with pytest.raises(ValueError, match="cannot give 30 test"):
        splits.build_split(data, n_test=30, n_val=5)


def test_split_files_and_named_benchmarks_agree(data, tmp_path, monkeypatch):
    monkeypatch.setattr(splits, "N_TEST", 5)
    monkeypatch.setattr(splits, "N_VAL", 4)
    monkeypatch.setattr(splits, "_CACHE", {})
    parts, _ = splits.build_split(data, n_test=5, n_val=4)
    rep = splits.write_split(tmp_path / "out", data, n_test=5, n_val=4)
    assert rep["sizes"] == {"test": 5, "val": 4, "train": 23}
    for part in splits.PARTS:
        named = load_benchmark(f"wordprob_{part}", data_dir=data)
        from_file = load_benchmark(part, path=tmp_path / "out" / f"{part}.jsonl")
        assert [(p.id, p.question, p.answer) for p in named] == [(p.id, p.question, p.answer) for p in parts[part]]
        assert [(p.id, p.question, p.answer) for p in from_file] == [(p.id, p.question, p.answer) for p in named]
    report = json.loads((tmp_path / "out" / "contamination.json").read_text())
    assert len(report["dropped"]) == 6
    assert len(benchmark_provenance("wordprob_test", data_dir=data)) == 7  # every file the split reads
