"""Every evaluation's results in the shapes lm-evaluation-harness writes, so tools that read lm-eval output read ours.

Beside items.jsonl and summary.json, each benchmark folder gets
  results.json            lm-eval's aggregated results file (its results_<date>.json): `results[task]` with
                          "exact_match,<filter>" and "exact_match_stderr,<filter>" per extractor, `configs`,
                          `versions`, `n-shot`, `higher_is_better`, `n-samples`, `config`, the environment,
                          tokenizer and model identity keys, `task_hashes`, `total_evaluation_time_seconds`
  samples_<task>.jsonl    lm-eval's per-sample log (--log_samples): one line per item and filter, with doc_id,
                          doc, target, arguments, resps, filtered_resps, filter, metrics, the three hashes and
                          exact_match

The filter names are lm-eval's gsm8k ones for our two extractors that play their part (strict -> "strict-match",
flexible -> "flexible-extract"); boxed and math_verify keep their names. The extraction itself is yfpo's
(yfpo.grading): our strict also reads "The answer is N", so the numbers are not lm-eval's own regexes' numbers.
Keys and value types are checked against files written by lm-eval 0.4.13 itself (tests/fixtures/lm_eval/).
An extraction that found nothing is "[invalid]", as lm-eval's regex filter writes it. stderr is lm-eval's
(sample standard deviation / sqrt(n); "N/A" for one item).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import time

from yfpo.grading import EXTRACTORS
from yfpo.utils import atomic_write_json, atomic_write_text

FILTERS = {"strict": "strict-match", "flexible": "flexible-extract", "boxed": "boxed", "math_verify": "math_verify"}
INVALID = "[invalid]"  # what lm-eval's regex filter gives when nothing matches
TASK_VERSION = 1.0  # of our task definitions (bumped when prompts or grading change what a number means)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stderr(flags: list[float]) -> float | str:
    n = len(flags)
    if n < 2:
        return "N/A"
    mu = sum(flags) / n
    return math.sqrt(sum((x - mu) ** 2 for x in flags) / (n - 1)) / math.sqrt(n)


def sanitize(name: str) -> str:
    """A model name as lm-eval writes it into a folder name (model_name_sanitized)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _doc(row: dict) -> dict:
    doc = {"id": row["id"], "question": row["question"], "answer": row["gold"]}
    for k in ("group", "no_answer"):
        if k in row:
            doc[k] = row[k]
    return doc


def sample_lines(rows: list[dict], gen_kwargs: dict) -> list[dict]:
    """lm-eval's per-sample records: for each item (doc_id = its index) one record per filter."""
    out = []
    for doc_id, r in enumerate(rows):
        doc = _doc(r)
        outputs = [s["output"] for s in r["samples"]] if "samples" in r else [r["output"]]
        hashes = {
            "doc_hash": _hash(json.dumps(doc, indent=2, default=str, ensure_ascii=False)),
            "prompt_hash": _hash(r["prompt"]),
            "target_hash": _hash(str(r["gold"])),
        }
        for e in EXTRACTORS:
            got = r["extracted"].get(e)
            out.append(
                {
                    "doc_id": doc_id,
                    "doc": doc,
                    "target": str(r["gold"]),
                    "arguments": {"gen_args_0": {"arg_0": r["prompt"], "arg_1": gen_kwargs}},
                    "resps": [outputs],
                    "filtered_resps": [INVALID if got is None else str(got)],
                    "filter": FILTERS[e],
                    "metrics": ["exact_match"],
                    **hashes,
                    "exact_match": float(bool(r["correct"][e])),
                }
            )
    return out


def write(
    out_dir, rows: list[dict], summary: dict, *, cfg, tok, model_info: dict, n_original: int, elapsed: float
) -> None:
    """results.json and samples_<task>.jsonl of one benchmark's evaluation into out_dir. model_info: the model's
    num_parameters and max_length (its context length).
    Long: lm-eval's results.json document written field by field (a literal of its schema), not logic."""
    from pathlib import Path

    out = Path(out_dir)
    task, model = summary["bench"], summary["model"]
    prot = summary["protocol"]
    gen_kwargs = {
        "until": ["end-of-turn token"],
        "do_sample": bool(cfg.sampled),
        "temperature": float(cfg.temperature),
        "top_p": float(cfg.top_p),
        "max_gen_toks": int(cfg.max_new_tokens),
    }
    samples = sample_lines(rows, gen_kwargs)
    metrics: dict = {"name": task, "alias": task, "sample_len": len(rows)}
    for e in EXTRACTORS:
        flags = [float(bool(r["correct"][e])) for r in rows]
        metrics[f"exact_match,{FILTERS[e]}"] = sum(flags) / len(flags) if flags else 0.0
        metrics[f"exact_match_stderr,{FILTERS[e]}"] = _stderr(flags)
    data = summary.get("data") or [{}]
    files = [Path(d["path"]).name for d in data if d.get("path")]  # (names only: no machine's paths)
    shots_from = cfg.shots_file and Path(cfg.shots_file).name or "gsm8k/train.jsonl"  # (the n-shot exemplars' file)
    config = {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": files[0] if len(files) == 1 else files}},
        "training_split": shots_from,
        "test_split": "test",
        "fewshot_split": shots_from,
        "doc_to_text": prot.get("instruction") or "",
        "doc_to_target": "answer",
        "unsafe_code": False,
        "description": prot.get("system") or "",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "fewshot_config": {"sampler": "first_n", "split": shots_from, "samples": None},
        "output_type": "generate_until",
        "generation_kwargs": gen_kwargs,
        "repeats": int(cfg.samples),
        "num_fewshot": int(cfg.shots),
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "filter_list": [{"name": FILTERS[e], "filter": [{"function": f"yfpo.grading:{e}"}]} for e in EXTRACTORS],
        "should_decontaminate": False,
        "metadata": {"version": TASK_VERSION, "protocol": prot.get("template"), "pretrained": model},
    }
    chat = getattr(tok, "chat_template", None)
    chat = chat if isinstance(chat, str) else None
    versions = summary.get("versions") or {}

    def token(name: str) -> list[str]:
        return [str(getattr(tok, f"{name}_token", None)), str(getattr(tok, f"{name}_token_id", None))]

    results = {
        "results": {task: metrics},
        "group_subtasks": {},
        "configs": {task: config},
        "versions": {task: TASK_VERSION},
        "n-shot": {task: int(cfg.shots)},
        "higher_is_better": {task: {"exact_match": True}},
        "n-samples": {task: {"original": int(n_original), "effective": len(rows)}},
        "config": {
            "model": "yfpo",
            "model_args": {"pretrained": model, "dtype": cfg.dtype},
            "model_num_parameters": int(model_info.get("num_parameters") or 0),
            "model_dtype": cfg.dtype,
            "model_revision": "main",
            "model_sha": "",
            "batch_size": str(cfg.batch_size),
            "batch_sizes": [],
            "device": str(cfg.device),
            "use_cache": None,
            "limit": cfg.limit,
            "bootstrap_iters": 0,
            "gen_kwargs": gen_kwargs,
            "random_seed": int(cfg.seed),
            "numpy_seed": int(cfg.seed),
            "torch_seed": int(cfg.seed),
            "fewshot_seed": int(cfg.seed),
        },
        "git_hash": None,
        "date": time.time(),
        "pretty_env_info": f"yfpo eval; Python {platform.python_version()}; "
        + "; ".join(f"{k} {v}" for k, v in versions.items()),
        "transformers_version": str(versions.get("transformers", "")),
        "lm_eval_version": "n/a (written by yfpo in lm-eval's shape)",
        "upper_git_hash": None,
        "tokenizer_pad_token": token("pad"),
        "tokenizer_eos_token": token("eos"),
        "tokenizer_bos_token": token("bos"),
        "eot_token_id": getattr(tok, "eos_token_id", None),
        "max_length": model_info.get("max_length"),
        "task_hashes": {task: _hash("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in samples))},
        "model_source": "yfpo",
        "model_name": model,
        "model_name_sanitized": sanitize(model),
        "system_instruction": prot.get("system"),
        "system_instruction_sha": _hash(prot["system"]) if prot.get("system") else None,
        "fewshot_as_multiturn": False,
        "chat_template": chat,
        "chat_template_sha": _hash(chat) if chat else None,
        "total_evaluation_time_seconds": str(round(elapsed, 3)),
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / f"samples_{task}.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
