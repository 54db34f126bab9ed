"""`run_eval`: generate on a benchmark, grade with every extractor, write per-item JSONL + summary JSON.

Output folder: items.jsonl (one row per problem, appended as batches finish: a rerun skips the items
already there) and summary.json (accuracy per extractor with Wilson 95% CIs, the protocol, model,
versions, time and tokens/s, and `data`: the benchmark file(s) read, path + sha256). The folder records
its config (yfpo.resume): a rerun with another model, benchmark file, limit or protocol is refused, not
mixed in. `compare_items` pairs two runs item by item.
"""

from __future__ import annotations

import time
from pathlib import Path

from yfpo.data.problems import Problem, benchmark_kind, benchmark_provenance, load_benchmark
from yfpo.engine.answers import EXTRACTORS, PRIMARY, grade
from yfpo.engine.generate import generate
from yfpo.engine.prompts import INSTRUCTION, TEMPLATE_NAME, build_prompt
from yfpo.eval.stats import accuracy, mcnemar_exact, paired_bootstrap
from yfpo.utils import append_jsonl, atomic_write_json, now, read_jsonl_resume, versions


def _load(model, tokenizer, dtype, device):
    if isinstance(model, str):
        from yfpo.models import load_model

        m, tok = load_model(model, dtype=dtype, device=device)
        return m, tok, model
    if tokenizer is None:
        raise ValueError("run_eval: pass tokenizer= with a loaded model")
    return model, tokenizer, getattr(model.config, "name_or_path", type(model).__name__)


def summarize(rows: list[dict], bench: str, model_name: str, protocol: dict, extra: dict | None = None) -> dict:
    acc = {e: accuracy([r["correct"][e] for r in rows]) for e in EXTRACTORS}
    return {"bench": bench, "model": model_name, "n": len(rows), "primary": PRIMARY, "accuracy": acc,
            "protocol": protocol, **(extra or {})}


# protocol fields that change outputs: a rerun into the same folder must match them to resume
_RESUME_KEYS = ("bench", "model", "template", "instruction", "shots", "decoding", "max_new_tokens", "kind")


def _check_protocol(out: Path, protocol: dict, resuming: bool) -> None:
    """Write out/protocol.json; when resuming, refuse to mix items generated under another protocol."""
    import json

    p = out / "protocol.json"
    if resuming and p.exists():
        old = json.loads(p.read_text())
        diff = [k for k in _RESUME_KEYS if k in old and old.get(k) != protocol.get(k)]
        if diff:
            raise ValueError(f"{out} holds items from another protocol ({', '.join(f'{k}: {old[k]!r} -> {protocol.get(k)!r}' for k in diff)}); "
                             "use another --out folder or delete it")
    atomic_write_json(p, protocol)


def run_eval(model, bench: str, *, tokenizer=None, limit: int | None = None, shots: int = 0, out_dir=None,
             batch_size: int = 16, max_new_tokens: int = 256, data_dir=None, backend: str = "auto",
             dtype: str = "float32", device: str = "cpu", bench_file: str | None = None,
             problems: list[Problem] | None = None, chunk: int | None = None, progress: bool = True,
             hub: bool | None = None, overwrite: bool = False) -> dict:
    """Evaluate `model` (alias/path, or a loaded model with tokenizer=) on `bench`. Returns the summary."""
    m, tok, model_name = _load(model, tokenizer, dtype, device)
    probs = problems if problems is not None else load_benchmark(bench, data_dir=data_dir, limit=limit, path=bench_file,
                                                                 hub=hub)
    data = benchmark_provenance(bench, data_dir, bench_file) if problems is None else [{"path": None, "passed_in": len(probs)}]
    kind = benchmark_kind(bench)
    out = Path(out_dir) if out_dir else None
    if out:
        from yfpo.resume import claim, model_identity

        # items are graded one by one, so another limit only adds or leaves out items: not part of the record
        claim(out, "eval", {"model": model_identity(model_name), "bench": bench, "data": [d.get("sha256") for d in data],
                            "shots": shots, "max_new_tokens": max_new_tokens, "backend": backend, "dtype": dtype,
                            "template": TEMPLATE_NAME, "instruction": INSTRUCTION}, overwrite=overwrite)
    items_path = out / "items.jsonl" if out else None
    done = {r["id"]: r for r in read_jsonl_resume(items_path)} if items_path else {}
    todo = [p for p in probs if p.id not in done]
    protocol = {"template": TEMPLATE_NAME, "instruction": INSTRUCTION, "chat_template": bool(getattr(tok, "chat_template", None)),
                "shots": shots, "shot_source": "gsm8k_train[:shots]" if shots else None,
                "decoding": "greedy", "max_new_tokens": max_new_tokens, "extractors": list(EXTRACTORS),
                "primary": PRIMARY, "stop": "end-of-turn token", "batch_size": batch_size, "kind": kind}
    if out:
        _check_protocol(out, {**protocol, "model": model_name, "bench": bench}, resuming=bool(done))
    rows = [done[p.id] for p in probs if p.id in done]
    t0 = time.time()
    new_tokens = 0
    chunk = chunk or max(batch_size * 4, 64)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        prompts = [build_prompt(tok, p.question, shots=shots, data_dir=data_dir) for p in part]
        gens = generate(m, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, backend=backend,
                        progress=progress, desc=f"eval {bench}")
        new_rows = []
        for p, prompt, g in zip(part, prompts, gens):
            gr = grade(g.text, p.answer, kind)
            new_rows.append({"id": p.id, "question": p.question, "gold": p.answer, "prompt": prompt, "output": g.text,
                             "n_tokens": g.n_tokens, "truncated": g.truncated, "finish": g.finish,
                             "extracted": gr["extracted"], "correct": gr["correct"]})
            new_tokens += g.n_tokens
        if items_path:
            append_jsonl(items_path, new_rows)
        rows.extend(new_rows)
    elapsed = time.time() - t0
    order = {p.id: i for i, p in enumerate(probs)}
    rows.sort(key=lambda r: order.get(r["id"], 1 << 30))
    summary = summarize(rows, bench, model_name, protocol, {
        "data": data, "versions": versions(), "date": now(), "time_s": round(elapsed, 2),
        "new_items": len(todo), "tokens_generated": new_tokens,
        "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 and new_tokens else None,
        "problems_per_s": round(len(todo) / elapsed, 4) if elapsed > 0 and todo else None,
        "truncated": sum(1 for r in rows if r.get("truncated")),
    })
    if out:
        atomic_write_json(out / "summary.json", summary)
    return summary


def load_items(path) -> list[dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "items.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (expected an eval output folder or its items.jsonl)")
    return read_jsonl_resume(p)


def compare_items(a_rows: list[dict], b_rows: list[dict], n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired comparison on the items both runs have: per extractor acc A/B, diff, bootstrap CI, McNemar p."""
    a_by = {r["id"]: r for r in a_rows}
    b_by = {r["id"]: r for r in b_rows}
    ids = [i for i in a_by if i in b_by]
    res = {"n": len(ids), "only_a": len(a_by) - len(ids), "only_b": len(b_by) - len(ids), "by_extractor": {}}
    for e in EXTRACTORS:
        fa = [bool(a_by[i]["correct"][e]) for i in ids]
        fb = [bool(b_by[i]["correct"][e]) for i in ids]
        mc = mcnemar_exact(fa, fb)
        bs = paired_bootstrap([float(x) for x in fa], [float(x) for x in fb], n_boot=n_boot, seed=seed)
        res["by_extractor"][e] = {"acc_a": sum(fa) / len(ids) if ids else 0.0, "acc_b": sum(fb) / len(ids) if ids else 0.0,
                                  "diff": bs["diff"], "ci_lo": bs["lo"], "ci_hi": bs["hi"], "p_bootstrap": bs["p"],
                                  "mcnemar_p": mc["p"], "b01": mc["b01"], "b10": mc["b10"]}
    return res
