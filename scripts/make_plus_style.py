"""A GSM-Plus-format file (question, answer, perturbation_type) built from MAWPS SingleOp, plus its task spec.

    python scripts/make_plus_style.py OUT_DIR [--n 20] [--data-dir ../shared/data]

GSM-Plus itself is not in ../shared/data and cannot be fetched here, so this builds the same format from real
MAWPS SingleOp items (first --n items), with three of GSM-Plus's perturbation types applied by rule:
  none                   the item as it is;
  distractor_insertion   an irrelevant sentence with a number, inserted before the question sentence
                         (gold unchanged);
  critical_thinking      the last number of the body replaced by "some", so the question cannot be answered
                         (gold "None", graded under answer_kind none-allowed).
Writes OUT_DIR/plus_style.jsonl and OUT_DIR/plus_style.yaml (`yfpo eval --task OUT_DIR/plus_style.yaml`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NUM = re.compile(r"\b\d+(?:\.\d+)?\b")
DISTRACTORS = [
    "A shop nearby sells {n} pencils.",
    "The weather report says it will rain for {n} hours.",
    "There are {n} trees in the park across the street.",
]


def split_question(text: str) -> tuple[str, str]:
    """(body, question sentence): the question is the last sentence (or clause after the last comma) with '?'."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    if len(parts) > 1:
        return " ".join(parts[:-1]), parts[-1]
    i = text.rfind(",")
    return (text[: i + 1], text[i + 1 :].strip()) if i > 0 else ("", text)


def perturb(i: int, text: str, gold: str) -> list[dict]:
    body, q = split_question(text)
    rows = [{"id": f"plus-{i}-none", "question": text, "answer": gold, "perturbation_type": "none"}]
    dis = DISTRACTORS[i % len(DISTRACTORS)].format(n=(i * 7) % 40 + 3)
    db, dq = (body[:-1] + ".", q[:1].upper() + q[1:]) if body.endswith(",") else (body, q)  # "..., how" -> ". How"
    rows.append(
        {
            "id": f"plus-{i}-distractor",
            "question": f"{db} {dis} {dq}".strip(),
            "answer": gold,
            "perturbation_type": "distractor_insertion",
        }
    )
    nums = list(NUM.finditer(body))
    if nums:  # remove the last quantity of the body: the question loses a number it needs
        m = nums[-1]
        ct = body[: m.start()] + "some" + body[m.end() :]
        rows.append(
            {
                "id": f"plus-{i}-critical",
                "question": f"{ct} {q}".strip(),
                "answer": "None",
                "perturbation_type": "critical_thinking",
            }
        )
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=20, help="source items (first N of MAWPS SingleOp)")
    ap.add_argument("--data-dir", default=None, help="data folder (default: the one yfpo finds)")
    args = ap.parse_args(argv)
    from yfpo.data.problems import find_data_file

    src = Path(args.data_dir) / "mawps" / "singleop.jsonl" if args.data_dir else find_data_file("mawps/singleop.jsonl")
    if src is None or not src.exists():
        raise SystemExit("mawps/singleop.jsonl not found (set --data-dir)")
    rows = []
    for i, line in enumerate(src.read_text().splitlines()[: args.n]):
        r = json.loads(line)
        t = r["target"]
        gold = str(int(t)) if float(t).is_integer() else str(t)
        rows += perturb(i, r["input"], gold)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plus_style.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "plus_style.yaml").write_text(
        "name: plus_style\nfile: plus_style.jsonl\nquestion_field: question\nanswer_field: answer\n"
        "answer_kind: none-allowed\ngroup_field: perturbation_type\nid_field: id\n"
    )
    kinds = {
        k: sum(r["perturbation_type"] == k for r in rows) for k in dict.fromkeys(r["perturbation_type"] for r in rows)
    }
    print(f"{len(rows)} items {kinds} -> {out / 'plus_style.jsonl'}; spec {out / 'plus_style.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
