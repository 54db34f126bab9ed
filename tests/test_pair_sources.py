"""Pairs from wherever they are (yfpo.data.pair_sources): JSONL/JSON/Parquet/CSV files, datasets' save_to_disk
folders and hub ids, in TRL's standard and conversational formats with explicit or implicit prompt, and Step-DPO's;
a bad row names its source, row and field. `yfpo train` trains on a conversational file, a Parquet file and a
save_to_disk folder."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict
from test_train_common import cfg_for, make_yfpo, pair_rows, step_rows, write_jsonl

from yfpo.cli import main
from yfpo.data.pair_sources import read_pairs, source_identity
from yfpo.data.problems import DataFormatError
from yfpo.models.tiny import save_tiny


def conversational(rows):
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in rows
    ]


def implicit(rows):
    return [
        {"chosen": c["prompt"] + c["chosen"], "rejected": c["prompt"] + c["rejected"]} for c in conversational(rows)
    ]


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_every_source_type_reads_the_same_pairs(tmp_path):
    rows = pair_rows(3)
    want = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    import csv

    with open(tmp_path / "p.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        w.writerows(rows)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    DatasetDict({"train": Dataset.from_list(rows[:1]), "test": Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "dd")
    )
    sources = [
        write_jsonl(tmp_path / "p.jsonl", rows),
        tmp_path / "p.json",
        write_parquet(tmp_path / "p.parquet", rows),
        tmp_path / "p.csv",
        tmp_path / "disk",
        f"{tmp_path / 'dd'}@test",
    ]
    for src in sources:
        got, fmt = read_pairs(src)
        assert fmt == "standard" and [{k: g[k] for k in want[0]} for g in got] == want, src
    assert len(read_pairs(tmp_path / "dd")[0]) == 1  # a DatasetDict's train split by default
    with pytest.raises(DataFormatError, match="no split 'dev'; it has train, test"):
        read_pairs(f"{tmp_path / 'dd'}@dev")
    # a folder by content: the same rows saved elsewhere have the same identity, other rows another
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk2"))
    Dataset.from_list(rows[:2]).save_to_disk(str(tmp_path / "disk3"))
    ids = [source_identity(tmp_path / d).split(" ")[1] for d in ("disk", "disk2", "disk3")]
    assert ids[0] == ids[1] != ids[2]


def test_trl_formats_explicit_and_implicit_prompt(tmp_path):
    rows = pair_rows(2)
    got, fmt = read_pairs(write_jsonl(tmp_path / "c.jsonl", conversational(rows)))
    assert fmt == "conversational" and got[0]["prompt"] == [{"role": "user", "content": rows[0]["prompt"]}]
    got, fmt = read_pairs(write_jsonl(tmp_path / "ci.jsonl", implicit(rows)))  # TRL's extract_prompt
    assert fmt == "conversational" and got == [{**c, "implicit_prompt": True} for c in conversational(rows)]
    text = [{"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"}]
    got, fmt = read_pairs(write_jsonl(tmp_path / "si.jsonl", text))
    assert fmt == "standard" and (got[0]["prompt"], got[0]["chosen"], got[0]["rejected"]) == ("Q: 2+2? A:", " 4", " 5")
    got, fmt = read_pairs(write_jsonl(tmp_path / "s.jsonl", step_rows(2)))
    assert fmt == "step" and got[0]["initial_reason_steps"].startswith("Step 1")


@pytest.mark.parametrize(
    "row, msg",
    [
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "row 2: field 'chosen' must be a string"),
        ({"prompt": "q", "rejected": "b"}, "row 2: missing field 'chosen'"),
        (
            {"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": []},
            "row 2: field 'prompt' message 0: expected",
        ),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "row 2: fields 'chosen' and 'rejected' are identical"),
        ({"chosen": "abc", "rejected": "xyz"}, "row 2: no 'prompt', and chosen and rejected share no beginning"),
    ],
)
def test_a_bad_row_names_source_row_and_field(tmp_path, row, msg):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    rows = [good, row]
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=f"bad.json {msg}"):
        read_pairs(tmp_path / "bad.json")
    with pytest.raises(DataFormatError, match=f"bad.jsonl:2: {msg.removeprefix('row 2: ')}"):
        read_pairs(write_jsonl(tmp_path / "bad.jsonl", rows))
    conv_then_plain = [conversational(pair_rows(1))[0], good]
    with pytest.raises(DataFormatError, match="mixed.jsonl:2: a standard pair in a source whose first row"):
        read_pairs(write_jsonl(tmp_path / "mixed.jsonl", conv_then_plain))


def test_missing_source_and_uncached_hub_id_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(DataFormatError, match="pairs .*nope.parquet: no such file or folder"):
        read_pairs(tmp_path / "nope.parquet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(DataFormatError) as e:
        read_pairs("yfpo-tests/no-such-pairs@train")
    msg = str(e.value)
    assert "hub is not reachable (offline)" in msg and "not in the local cache" in msg and "\n" not in msg


def test_conversational_prompt_is_templated_by_trl_like_a_plain_one(tmp_path):
    rows = pair_rows(2)
    plain = make_yfpo(cfg_for(tmp_path / "a", write_jsonl(tmp_path / "p.jsonl", rows)))
    conv = make_yfpo(cfg_for(tmp_path / "b", write_jsonl(tmp_path / "c.jsonl", conversational(rows))))
    assert conv.train_dataset["prompt_ids"] == plain.train_dataset["prompt_ids"]  # the template applied once


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    return d, save_tiny(d / "tiny", family="llama", seed=0)


@pytest.mark.parametrize("kind", ["conversational", "parquet", "save_to_disk"])
def test_yfpo_train_trains_on(kind, tiny_dir, capsys):
    d, model_dir = tiny_dir
    rows = pair_rows(4)
    if kind == "conversational":
        src = write_jsonl(d / "chat.jsonl", conversational(rows))
    elif kind == "parquet":
        src = write_parquet(d / "pairs.parquet", rows)
    else:
        src = d / "disk"
        Dataset.from_list(conversational(rows)).save_to_disk(str(src))
    out = d / f"run_{kind}"
    args = ["train", "--model", str(model_dir), "--pairs", str(src), "--out", str(out), "--lora_r", "4"]
    args += ["--per_device_train_batch_size", "2", "--max_steps", "2", "--max_length", "96", "--use_cpu", "true"]
    assert main(args) == 0, capsys.readouterr().err
    done = json.loads((out / "train_done.json").read_text())
    assert done["steps"] == 2 and done["pairs_used"] == 4 and (out / "final" / "adapter_config.json").exists()
