"""Rehearsal of every `yfpo run` stage at real model shapes on this machine (issue 31, item 2).

Builds a randomly initialised model from a real architecture (configs/models/NAME.json: the public config values,
no weights) with the default tokenizer (SmolLM2's 49,152 ids are a subset of the real vocabulary, which the
embedding and LM head keep at full size: 151,936 for Qwen2.5, 128,256 for Llama 3.2), then runs `yfpo run` end to
end at tiny limits (a few texts, pairs, steps and items): neurons (AttnLRP) + causal check, pairs, reference +
calibration, DPO, YFPO (LoRA), YFPO+FDT (full fine-tuning), GRPO with the neuron reward (LoRA), eval (GSM8K),
pair discrimination, MMLU, report. Each stage function runs in a wrapper that records its wall time, the process's
peak resident memory during it (VmHWM, reset before the stage through /proc/self/clear_refs) and the size of the
folder it wrote. One (model, dtype) per child process, so one run's memory does not carry into the next.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --models qwen2.5-0.5b --dtypes float32 bfloat16
    python benchmarks/bench_scale.py --table runs/scale/results.jsonl     # the Markdown table of past results

The outputs say nothing about quality (random weights); they are what the stages cost at this shape. MMLU runs on
the first 4 items of each of its two files (a data folder of links with trimmed MMLU files), since the real stage's
cost is per item. FDT needs a trainable LM head, so it is full fine-tuning; in float32 it uses Adafactor instead of
AdamW (AdamW's 8 bytes/parameter of state would take a 0.5B model's full-fine-tuning stage past the 8 GB this
rehearsal may use on a shared 24 GB machine); docs/scale.md gives AdamW's cost from the fitted model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "configs" / "models"


def _hwm_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def du(p: Path) -> int:
    p = Path(p)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) if p.exists() else 0


def build_model(name: str, work: Path, seed: int = 0) -> Path:
    """A folder with the random-init model of configs/models/NAME.json (bf16 weights) and the default tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from yfpo.models.loading import load_tokenizer

    out = work / "models" / name
    if (out / "config.json").exists():
        return out
    spec = {k: v for k, v in json.loads((MODELS / f"{name}.json").read_text()).items() if not k.startswith("_")}
    spec.pop("architectures", None)
    tok = load_tokenizer("default")
    cfg = AutoConfig.for_model(
        spec.pop("model_type"),
        **spec,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(out)
    return out


def trimmed_data_dir(work: Path, n: int = 4) -> Path:
    """The shared data folder as links, with MMLU's two files cut to their first n items."""
    from yfpo.data.problems import candidate_data_dirs

    src = next(d for d in candidate_data_dirs(None) if (d / "mmlu" / "test.jsonl").exists())
    out = work / "data"
    if out.exists():
        return out
    out.mkdir(parents=True)
    for d in src.iterdir():
        if d.name not in ("mmlu", "mmlu_redux"):
            (out / d.name).symlink_to(d)
    for rel in ("mmlu/test.jsonl", "mmlu/dev.jsonl", "mmlu_redux/mmlu_redux.jsonl"):
        (out / rel).parent.mkdir(exist_ok=True)
        lines = [ln for ln in (src / rel).read_text().split("\n") if ln.strip()]
        if rel.endswith("test.jsonl"):  # n non-math items (the stage skips math subjects)
            lines = [ln for ln in lines if json.loads(ln).get("subcategory") != "math"][:n]
        elif rel.endswith("mmlu_redux.jsonl"):
            lines = [ln for ln in lines if json.loads(ln).get("error_type") == "ok"][:n]
        (out / rel).write_text("\n".join(lines) + "\n")
    return out


def pairs_file(work: Path, n: int = 4) -> Path:
    """Preference pairs for the training stages: a random model never ends a sample (every one is cut at
    max_new_tokens), so the pairs stage, which drops truncated samples, makes none; its cost is measured on its own
    (see `one`) and the trainings get these: GSM8K train questions, the gold solution vs the same with its final
    number changed."""
    from yfpo.data.problems import load_benchmark

    out = work / "pairs.jsonl"
    rows = []
    for p in load_benchmark("gsm8k_train")[:n]:
        gold = p.answer
        chosen = f"Let me compute it step by step. The answer is {gold}."
        rows.append(
            {"prompt": p.question, "chosen": chosen, "rejected": chosen.replace(gold, str(int(float(gold)) + 1))}
        )
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def run_config(
    name: str, model_dir: Path, dtype: str, work: Path, data_dir: Path, fdt_full: bool, device: str = "cpu"
) -> dict:
    methods = {
        "dpo": {"gamma": 0.0},
        "yfpo": {"gamma": 1.0},
        "grpo_n": {"trainer": "grpo", "neuron_reward_weight": 0.5},
    }
    if fdt_full:
        fdt = {"gamma": 1.0, "fdt": True, "lora": False, "lr": 5.0e-6}
        if dtype == "float32" and device == "cpu":
            fdt["trl"] = {"optim": "adafactor"}
        methods["yfpo_fdt"] = fdt
    return {
        "name": f"{name}-{dtype}-{device}",
        "model": str(model_dir),
        "out_root": str(work / "runs"),
        "seeds": [0],
        "dtype": dtype,
        "device": device,
        "neurons": {"method": "attnlrp", "n_math": 4, "n_contrast": 4, "k": 0.01, "batch_size": 2, "max_length": 64},
        "check": {"ablation": "zero", "n_random": 1, "n_math": 4, "n_contrast": 4, "n_eval": 0, "max_length": 64},
        "pairs_file": str(pairs_file(work)),
        "pairs": {
            "bench": "gsm8k_train",
            "limit": 2,
            "k": 2,
            "temperature": 0.8,
            "top_p": 0.95,
            "max_new_tokens": 16,
            "batch_size": 4,
            "max_pairs_per_question": 2,
            "data_dir": str(data_dir),
        },
        "train": {
            "lora": True,
            "beta": 0.1,
            "lr": 5.0e-5,
            "epochs": 1,
            "batch_size": 2,
            "max_length": 128,
            "limit_pairs": 2,
            "warmup_ratio": 0.0,
            "save_steps": 1,
        },
        "grpo": {
            "questions": "mawps_singleop",
            "num_generations": 2,
            "batch_size": 2,
            "max_new_tokens": 16,
            "max_steps": 1,
            "save_steps": 1,
            "data_dir": str(data_dir),
        },
        "methods": methods,
        "eval": {
            "benches": ["gsm8k"],
            "limit": 2,
            "max_new_tokens": 16,
            "batch_size": 2,
            "discrimination": 2,
            "discrimination_batch_size": 2,
            "mmlu": 4,
            "mmlu_batch_size": 2,
            "data_dir": str(data_dir),
        },
        "report": True,
    }


def _out_of(kind: str, args, kw) -> str | None:
    """The folder a stage function writes (from its config or arguments)."""
    for a in (*args, *kw.values()):
        for attr in ("output_dir", "out_dir", "out"):
            v = getattr(a, attr, None)
            if isinstance(v, (str, Path)) and v:
                return str(v)
    for k in ("out_dir", "out"):
        if kw.get(k):
            return str(kw[k])
    if kind == "evals" and len(args) > 1 and args[1]:
        return str(Path(args[1][0]["out_dir"]).parent)
    return None


def one(name: str, dtype: str, work: Path, fdt_full: bool, device: str = "cpu") -> dict:
    """Run the whole pipeline on one model x dtype in this process; returns the per-stage records."""
    import torch
    from safetensors.torch import load_file

    from yfpo.pipeline import load_run_config, run_pipeline
    from yfpo.pipeline.stages import check as st_check
    from yfpo.pipeline.stages import evaluate as st_eval
    from yfpo.pipeline.stages import neurons as st_neurons
    from yfpo.pipeline.stages import pairs as st_pairs
    from yfpo.pipeline.stages import reference as st_ref
    from yfpo.pipeline.stages import train as st_train

    # the library function each stage node calls, by stage kind (wrapped below to measure it)
    targets = {
        "neurons": (st_neurons, "find_neurons"),
        "check": (st_check, "causal_check"),
        "pairs": (st_pairs, "build_pairs"),
        "reference": (st_ref, "compute_reference"),
        "train": (st_train, "train"),
        "grpo": (st_train, "grpo"),
        "evals": (st_eval, "run_evals"),
        "discrimination": (st_eval, "run_discrimination"),
        "mmlu": (st_eval, "run_mmlu"),
    }

    torch.manual_seed(0)
    t_build = time.time()
    model_dir = build_model(name, work)
    build_s = time.time() - t_build
    data_dir = trimmed_data_dir(work)
    rc = load_run_config(None, run_config(name, model_dir, dtype, work, data_dir, fdt_full, device))
    cuda = device == "cuda"
    records: list[dict] = []

    def wrap(kind, fn):
        def timed(*args, **kw):
            _reset_peak()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.time()
            err = None
            try:
                return fn(*args, **kw)
            except BaseException as e:  # recorded, then raised: the pipeline names the stage that failed
                err = f"{type(e).__name__}: {e}"[:400]
                raise
            finally:
                out = _out_of(kind, args, kw)
                records.append(
                    {
                        "model": name,
                        "dtype": dtype,
                        "kind": kind,
                        "out": out,
                        "time_s": round(time.time() - t0, 2),
                        "peak_rss_mb": round(_hwm_mb()),
                        **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)} if cuda else {}),
                        "written_mb": round(du(Path(out)) / 2**20, 2) if out else None,
                        **({"error": err} if err else {}),
                    }
                )
                with open(work / "stages.jsonl", "a") as f:  # as it goes: a stage killed later keeps these
                    f.write(json.dumps(records[-1]) + "\n")

        return timed

    runners = {}
    for kind, (module, attr) in targets.items():
        runners[kind] = wrap(kind, getattr(module, attr))
        setattr(module, attr, runners[kind])
    _reset_peak()
    t0 = time.time()
    error = None
    try:
        from yfpo.config import from_dict
        from yfpo.pairs.config import PairsConfig

        pdir = work / "runs" / rc.name / "pairs-stage"
        pdir.mkdir(parents=True, exist_ok=True)
        pcfg = from_dict(
            PairsConfig, {**rc.pairs, "model": rc.model, "dtype": dtype, "device": device, "out_dir": str(pdir)}
        )
        runners["pairs"](pcfg)  # measured on its own: with a random model it makes no pair (see pairs_file)
        run_pipeline(rc, log=lambda m: print(m, flush=True))
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"[:2000]
    total = time.time() - t0
    run_dir = work / "runs" / rc.name
    params = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
    cfg = json.loads((model_dir / "config.json").read_text())
    return {
        "model": name,
        "dtype": dtype,
        "device": device,
        "params": params,
        "layers": cfg["num_hidden_layers"],
        "mlp": cfg["intermediate_size"],
        "hidden": cfg["hidden_size"],
        "vocab": cfg["vocab_size"],
        "threads": torch.get_num_threads(),
        "build_model_s": round(build_s, 1),
        "total_s": round(total, 1),
        "run_dir_mb": round(du(run_dir) / 2**20, 1),
        "stages": records,
        "error": error,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | dtype | device | stage | time (s) | peak RSS (MB) | peak GPU (MB) | written (MB) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        for s in r["stages"]:
            label = s["kind"] + (f" ({Path(s['out']).name})" if s.get("out") else "")
            lines.append(
                f"| {r['model']} | {r['dtype']} | {r.get('device', 'cpu')} | {label}{' FAILED' if s.get('error') else ''} | "
                f"{s['time_s']} | {s['peak_rss_mb']} | {s.get('peak_gpu_mb', '')} | "
                f"{s['written_mb'] if s['written_mb'] is not None else ''} |"
            )
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r.get('device', 'cpu')} | **whole run**"
            f"{' FAILED' if r.get('error') else ''} | {r['total_s']} | | | {r['run_dir_mb']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["qwen2.5-0.5b"], help="names in configs/models/")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--work", default="runs/scale", help="models, data links, run folders and results.jsonl")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--fdt", default="auto", choices=["auto", "on", "off"], help="auto: only on models < 1B params")
    ap.add_argument("--table", default=None, help="print the table of this results.jsonl and exit")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.table:
        print(table([json.loads(ln) for ln in Path(a.table).read_text().splitlines() if ln.strip()]))
        return 0
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if a.one:
        name, dtype = a.one
        fdt = a.fdt == "on" or (a.fdt == "auto" and "0.5b" in name)
        rec = one(name, dtype, work, fdt, a.device)
        from _machine import cpu

        rec["cpu"], rec["flags"] = cpu()
        with open(work / "results.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(table([rec]))
        return 1 if rec["error"] else 0
    rc = 0
    for name in a.models:
        for dtype in a.dtypes:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                name,
                dtype,
                "--work",
                str(work),
                "--fdt",
                a.fdt,
                "--device",
                a.device,
            ]
            r = subprocess.run(cmd)
            rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    os.environ.setdefault("YFPO_NO_PROGRESS", "1")
    sys.exit(main())
