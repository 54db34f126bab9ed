"""Fault injection: SIGKILL every stage at random points, resume, compare with an uninterrupted run.

    python scripts/fault_injection.py --trials 5 [--targets train,eval] [--work DIR] [--json OUT.json]
    python scripts/fault_injection.py --malformed          # the malformed-input table only

On a tiny random model (yfpo.models.tiny), for each target (a CLI command: `neurons find`, `pairs build`,
`train`, `eval`, `report`, and the whole `yfpo run`):

1. reference: the command runs uninterrupted in WORK/cur/<target>, which is then moved to WORK/ref/<target>
   (every trial runs in the same absolute path, so paths recorded inside the outputs agree);
2. each trial starts the command again in a fresh WORK/cur/<target>, kills its process group with SIGKILL at
   a random time (uniform between the interpreter's start-up time and the reference wall time) 1-3 times,
   then reruns it to the end (the resume) and compares every output file with the reference.

Comparison (`compare_trees`): the same set of files; JSON / JSONL compared after dropping the keys in
IGNORED_KEYS (wall-clock times and dates, listed explicitly); text files after blanking ISO timestamps;
safetensors tensor by tensor, bit for bit; torch pickles (.pt/.pth/.bin) after torch.load, tensors bit for
bit, ignoring IGNORED_KEYS; anything else byte for byte. A leftover temporary file counts as a mismatch.

The malformed-input table (MALFORMED, >= 30 rows across pairs, Step-DPO pairs, benchmark files, NeuronSet,
run/train YAML and CLI values): each row writes one bad input, runs the CLI in-process and passes when the
command fails with exactly one error line naming the file (or the CLI flag) and the line/field, with no
traceback, and writes nothing at its output path. tests/test_fault_injection.py runs a CI-sized subset.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# fields whose values are wall-clock times or dates, so they differ between two uninterrupted runs
IGNORED_KEYS = frozenset(
    {
        # wall-clock times and dates
        "time_s",
        "date",
        "started",
        "finished",
        "timestamp",
        "wall_s",
        "elapsed_s",
        "built",
        "train_runtime",
        "train_time_s",
        "time",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_evaluation_time_seconds",  # lm-eval's results.json (yfpo.eval.lmeval)
        # throughput of the last invocation (eval summary.json): a resume generates only the missing items
        "tokens_per_s",
        "problems_per_s",
        "samples_per_s",
        "tokens_generated",
        "new_items",
        # run.json: whether this invocation reused a stage (status stays "done" either way)
        "cached",
        "time_s_this_invocation",
    }
)
# lists that are sets in the writing library (PEFT's adapter_config.json `target_modules` is a Python set, so
# its order follows the process's string-hash seed): compared as sets
SET_VALUED_KEYS = frozenset({"target_modules"})
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?")
# the report's stage table ends each row with the stage's wall time (differs between any two runs)
STAGE_TIME = re.compile(
    r"(\| (?:done|running|failed) \| )[0-9.]+( \|)"
    r"|(<td>(?:done|running|failed)</td><td class='num'>)[0-9.]+(</td>)"
)


def _text(p: Path) -> str:
    """A text output with its wall-clock content blanked: ISO timestamps, stage times in the report."""
    t = ISO_TIME.sub("<time>", p.read_text())
    return STAGE_TIME.sub(lambda m: (m.group(1) or m.group(3)) + "<s>" + (m.group(2) or m.group(4)), t)


TEMP_SUFFIXES = (".tmp", ".part", ".partial")


# ----------------------------------------------------------------------------- fixtures (no shared data)


def make_fixtures(root: Path) -> dict[str, Path]:
    """A tiny random model, a pairs file, a GSM8K-format benchmark file and a NeuronSet matching the model."""
    from yfpo.models.tiny import save_tiny
    from yfpo.neurons.neuronset import NeuronSet

    root.mkdir(parents=True, exist_ok=True)
    model = root / "tiny"
    if not (model / "config.json").exists():
        save_tiny(model)
    cfg = json.loads((model / "config.json").read_text())
    n_layers, width = cfg["num_hidden_layers"], cfg["intermediate_size"]
    rng = random.Random(0)
    pairs = root / "pairs.jsonl"
    with open(pairs, "w") as f:
        for i in range(8):
            a, b = rng.randint(2, 50), rng.randint(2, 50)
            f.write(
                json.dumps(
                    {
                        "prompt": f"What is {a} plus {b}?",
                        "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}.",
                        "rejected": f"{a} + {b} = {a + b + 1}. The answer is {a + b + 1}.",
                    }
                )
                + "\n"
            )
    bench = root / "bench.jsonl"
    with open(bench, "w") as f:
        for i in range(12):
            a, b = rng.randint(2, 50), rng.randint(2, 50)
            f.write(
                json.dumps(
                    {
                        "question": f"Tom has {a} apples and buys {b} more. How many now?",
                        "answer": f"He has {a} + {b} = {a + b}.\n#### {a + b}",
                    }
                )
                + "\n"
            )
    neurons = root / "neurons.json"
    picks = sorted({(rng.randrange(n_layers), rng.randrange(width)) for _ in range(8)})
    NeuronSet(
        [p[0] for p in picks],
        [p[1] for p in picks],
        [rng.uniform(-1, 1) for _ in picks],
        [rng.uniform(-0.1, 0.1) for _ in picks],
        [rng.uniform(0.5, 1.5) for _ in picks],
        {
            "num_layers": n_layers,
            "intermediate_size": width,
            "family": "llama",
            "model": str(model),
            "method": "attnlrp",
        },
    ).save(neurons)
    return {"root": root, "model": model, "pairs": pairs, "bench": bench, "neurons": neurons}


def _report_run(root: Path) -> Path:
    """The synthetic run directory of tests/test_report_build.py (documented schemas, no model needed)."""
    run = root / "runs" / "synth"
    if not (run / "run.json").exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from test_report_build import make_run

        make_run(root)
    return run


# ----------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    argv: Callable[[dict, Path], list[str]]  # (fixtures, output folder) -> yfpo CLI arguments
    needs_data: bool = False  # reads the shared corpora / benchmarks (/work/shared/data)
    # the output folder shows work in progress: something written, the final file not yet (fault_inject mid_work)
    in_progress: Callable[[Path], bool] | None = None


def _run_config(fx: dict, out: Path) -> list[str]:
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(f"""
name: fi
model: {fx["model"]}
out_root: {out}
seeds: [0]
neurons: {{n_math: 4, n_contrast: 4, k: 8, batch_size: 4, max_length: 48, progress: false}}
pairs_file: {fx["pairs"]}
train: {{lora: true, epochs: 1, batch_size: 2, max_length: 128, save_steps: 1}}
methods: {{dpo: {{gamma: 0.0}}, yfpo: {{gamma: 1.0}}}}
eval: {{benches: [gsm8k], limit: 4, max_new_tokens: 8, batch_size: 4, discrimination: 4}}
""")
    return ["run", str(cfg)]


TARGETS = {
    "neurons": Target(
        "neurons",
        lambda fx, out: [
            "neurons",
            "find",
            "--model",
            str(fx["model"]),
            "--out",
            str(out / "neurons.json"),
            "--n_math",
            "8",
            "--n_contrast",
            "8",
            "--k",
            "8",
            "--batch_size",
            "2",
            "--max_length",
            "48",
            "--progress",
            "false",
        ],
        True,
    ),
    "pairs": Target(
        "pairs",
        lambda fx, out: [
            "pairs",
            "build",
            "--model",
            str(fx["model"]),
            "--out_dir",
            str(out),
            "--bench",
            "gsm8k",
            "--bench_file",
            str(fx["bench"]),
            "--limit",
            "12",
            "--k",
            "2",
            "--max_new_tokens",
            "12",
            "--batch_size",
            "4",
            "--progress",
            "false",
        ],
    ),
    "train": Target(
        "train",
        lambda fx, out: [
            "train",
            "--out",
            str(out),
            "--model",
            str(fx["model"]),
            "--pairs",
            str(fx["pairs"]),
            "--neurons",
            str(fx["neurons"]),
            "--gamma",
            "1.0",
            "--lora",
            "true",
            "--epochs",
            "2",
            "--batch_size",
            "2",
            "--max_length",
            "128",
            "--save_steps",
            "1",
            "--logging_steps",
            "1",
        ],
    ),
    "eval": Target(
        "eval",
        lambda fx, out: [
            "eval",
            "--model",
            str(fx["model"]),
            "--bench",
            "gsm8k",
            "--bench-file",
            str(fx["bench"]),
            "--limit",
            "12",
            "--max-new-tokens",
            "12",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ],
        # the folder is claimed (its config recorded), the summary not written: the model loads or generates
        in_progress=lambda out: any(out.rglob("config.hash.json")) and not any(out.rglob("summary.json")),
    ),
    "report": Target(
        "report",
        lambda fx, out: ["report", str(_report_run(fx["root"])), "--out", str(out)],
        in_progress=lambda out: out.is_dir() and any(out.iterdir()) and not (out / "report.html").exists(),
    ),
    "run": Target("run", _run_config, True),
}


# ----------------------------------------------------------------------------- comparing two output trees


def _strip(obj):
    if isinstance(obj, dict):
        return {
            k: sorted(v) if k in SET_VALUED_KEYS and isinstance(v, list) else _strip(v)
            for k, v in obj.items()
            if k not in IGNORED_KEYS
        }
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    if isinstance(obj, str):
        return ISO_TIME.sub("<time>", obj)
    return obj


def _same_torch(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if type(a).__module__ == "numpy" and hasattr(a, "shape"):
        import numpy as np

        return type(a) is type(b) and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        ka, kb = set(a) - IGNORED_KEYS, set(b) - IGNORED_KEYS
        return ka == kb and all(_same_torch(a[k], b[k]) for k in ka)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_torch(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dict__") and type(a) is type(b) and not isinstance(a, type):
        return _same_torch(_strip(vars(a)), _strip(vars(b)))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # both NaN
    return _strip(a) == _strip(b)


def same_file(a: Path, b: Path) -> bool:
    suf = a.suffix
    if suf == ".json":
        return _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
    if a.name == "metrics.jsonl":  # append-only: a resume adds a marker and replays steps; compare the curve
        from yfpo.utils import read_jsonl_resume, read_metrics

        end = [_strip(r) for r in read_jsonl_resume(a) if "train_runtime" in r]
        end_b = [_strip(r) for r in read_jsonl_resume(b) if "train_runtime" in r]
        return [_strip(r) for r in read_metrics(a)] == [_strip(r) for r in read_metrics(b)] and end == end_b
    if suf == ".jsonl":
        la = [_strip(json.loads(x)) for x in a.read_text().splitlines() if x.strip()]
        lb = [_strip(json.loads(x)) for x in b.read_text().splitlines() if x.strip()]
        return la == lb
    if suf == ".safetensors":
        from safetensors.torch import load_file

        ta, tb = load_file(a), load_file(b)
        return set(ta) == set(tb) and all(_same_torch(ta[k], tb[k]) for k in ta)
    if suf in (".pt", ".pth", ".bin"):
        import torch

        return _same_torch(torch.load(a, weights_only=False), torch.load(b, weights_only=False))
    if a.name == "README.md" and b.name == "README.md":  # PEFT's model card: its tag list is a set
        return sorted(ISO_TIME.sub("<time>", a.read_text()).splitlines()) == sorted(
            ISO_TIME.sub("<time>", b.read_text()).splitlines()
        )
    if suf in (".md", ".html", ".yaml", ".txt", ".csv"):
        return _text(a) == _text(b)
    return a.read_bytes() == b.read_bytes()


def _first_difference(a: Path, b: Path) -> str:
    """' (line N, key K: x vs y)' for JSON lines files, so a mismatch report says what differed."""
    if a.suffix != ".jsonl":
        return ""
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    if len(la) != len(lb):
        return f" ({len(la)} vs {len(lb)} lines)"
    for n, (x, y) in enumerate(zip(la, lb), 1):
        x, y = _strip(json.loads(x)), _strip(json.loads(y))
        for k in sorted(set(x) | set(y)) if isinstance(x, dict) and isinstance(y, dict) else []:
            if x.get(k) != y.get(k):
                return f" (line {n}, key {k}: {str(x.get(k))[:40]} vs {str(y.get(k))[:40]})"
    return ""


def compare_trees(ref: Path, got: Path) -> list[str]:
    """Mismatches between two output folders (empty when they agree)."""
    fa = {p.relative_to(ref) for p in ref.rglob("*") if p.is_file()}
    fb = {p.relative_to(got) for p in got.rglob("*") if p.is_file()}
    out = [f"missing after resume: {p}" for p in sorted(fa - fb)]
    out += [
        f"extra after resume{' (temporary file left behind)' if p.suffix in TEMP_SUFFIXES else ''}: {p}"
        for p in sorted(fb - fa)
    ]
    for p in sorted(fa & fb):
        try:
            if not same_file(ref / p, got / p):
                out.append(f"differs: {p}{_first_difference(ref / p, got / p)}")
        except Exception as e:  # a torn or unreadable file is a mismatch, not a crash of the suite
            out.append(f"unreadable: {p} ({type(e).__name__}: {str(e)[:120]})")
    return out


# ----------------------------------------------------------------------------- running and killing


def _env() -> dict:
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / "src"),
        OMP_NUM_THREADS="1",
        YFPO_NO_PROGRESS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("YFPO_DEBUG", None)
    return env


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [PY, "-m", "yfpo.cli", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
            start_new_session=True,
        )


def run_to_end(argv: list[str], log: Path, timeout: float = 1200) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = _start(argv, log)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = -999
    return rc, time.perf_counter() - t0


def run_and_kill_in_progress(argv: list[str], log: Path, out: Path, in_progress: Callable[[Path], bool]) -> bool:
    """Start the command, SIGKILL its process group as soon as `in_progress(out)` holds (work started, not finished);
    False if it finished first."""
    p = _start(argv, log)
    while p.poll() is None:
        if in_progress(out):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.02)
    return False


def run_and_kill(argv: list[str], log: Path, after: float) -> bool:
    """Start the command, SIGKILL its process group after `after` seconds; False if it finished first."""
    p = _start(argv, log)
    try:
        p.wait(after)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def startup_time() -> float:
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "yfpo.cli", "--version"], env=_env(), cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - t0


@dataclass
class TargetResult:
    target: str
    trials: int = 0
    kills: int = 0
    finished_before_kill: int = 0
    resumes: int = 0
    resume_failures: int = 0
    mismatched_trials: int = 0
    ref_wall_s: float = 0.0
    mismatches: list | None = None


def fault_inject(
    target: Target,
    fx: dict,
    work: Path,
    trials: int,
    rng: random.Random,
    t_start: float,
    log=print,
    max_kills: int = 3,
    mid_work: bool = False,
) -> TargetResult:
    """`trials` times: run the target, SIGKILL it 1..max_kills times (at a random time; with mid_work, as soon as its
    output shows work in progress, Target.in_progress), resume it, compare with an uninterrupted run."""
    cur, ref = work / "cur" / target.name, work / "ref" / target.name
    for d in (cur, ref):
        shutil.rmtree(d, ignore_errors=True)
    cur.parent.mkdir(parents=True, exist_ok=True)
    ref.parent.mkdir(parents=True, exist_ok=True)
    logf = work / f"{target.name}.log"
    rc, wall = run_to_end(target.argv(fx, cur), logf)
    if rc != 0:
        raise RuntimeError(f"{target.name}: the uninterrupted reference run failed (rc {rc}); see {logf}")
    cur.rename(ref)
    res = TargetResult(target.name, ref_wall_s=round(wall, 1), mismatches=[])
    for t in range(trials):
        shutil.rmtree(cur, ignore_errors=True)
        res.trials += 1
        for _ in range(rng.randint(1, max_kills)):
            if mid_work:
                killed = run_and_kill_in_progress(target.argv(fx, cur), logf, cur, target.in_progress)
            else:
                killed = run_and_kill(target.argv(fx, cur), logf, rng.uniform(t_start, max(wall, t_start + 0.5)))
            if killed:
                res.kills += 1
            else:
                res.finished_before_kill += 1
        rc, _ = run_to_end(target.argv(fx, cur), logf)
        res.resumes += 1
        if rc != 0:
            res.resume_failures += 1
            res.mismatched_trials += 1
            res.mismatches.append(f"trial {t}: resume failed with rc {rc} (see {logf})")
            continue
        bad = compare_trees(ref, cur)
        if bad:
            res.mismatched_trials += 1
            res.mismatches.append(
                f"trial {t}: " + "; ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
            )
        log(f"  {target.name} trial {t}: kills so far {res.kills}, {'OK' if not bad else 'MISMATCH ' + bad[0]}")
    return res


# ----------------------------------------------------------------------------- the malformed-input table


@dataclass
class Case:
    id: str
    kind: str  # file type
    what: str  # the defect, in words
    make: Callable[[dict, Path], tuple[list[str], list[str], Path]]  # -> (argv, tokens the error must name, out)


def _w(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD = {"prompt": "What is 2 plus 2?", "chosen": "2 + 2 = 4. The answer is 4.", "rejected": "The answer is 5."}
STEP = {**GOOD, "initial_reason_steps": "Step 1: add.\n"}


def _train_on_pairs(rows_text: str, tokens: list[str]):
    def make(fx, tmp):
        p = _w(tmp / "bad_pairs.jsonl", rows_text)
        out = tmp / "out"
        return (
            [
                "train",
                "--out",
                str(out),
                "--model",
                str(fx["model"]),
                "--pairs",
                str(p),
                "--gamma",
                "0",
                "--max_steps",
                "1",
                "--batch_size",
                "2",
            ],
            ["bad_pairs.jsonl", *tokens],
            out,
        )

    return make


def _eval_on_bench(text: str, tokens: list[str]):
    def make(fx, tmp):
        p = _w(tmp / "bad_bench.jsonl", text)
        out = tmp / "out"
        return (
            [
                "eval",
                "--model",
                str(fx["model"]),
                "--bench",
                "gsm8k",
                "--bench-file",
                str(p),
                "--limit",
                "2",
                "--max-new-tokens",
                "2",
                "--out",
                str(out),
            ],
            ["bad_bench.jsonl", *tokens],
            out,
        )

    return make


def _train_on_neurons(edit: Callable[[dict], dict | str], tokens: list[str]):
    def make(fx, tmp):
        obj = json.loads(Path(fx["neurons"]).read_text())
        new = edit(obj)
        p = _w(tmp / "bad_neurons.json", new if isinstance(new, str) else json.dumps(new, allow_nan=True))
        out = tmp / "out"
        return (
            [
                "train",
                "--out",
                str(out),
                "--model",
                str(fx["model"]),
                "--pairs",
                str(fx["pairs"]),
                "--neurons",
                str(p),
                "--gamma",
                "1",
                "--max_steps",
                "1",
                "--batch_size",
                "2",
            ],
            ["bad_neurons.json", *tokens],
            out,
        )

    return make


def _edit_row(fn):
    """Apply fn to the first neuron row of a NeuronSet file."""
    return lambda o: {**o, "neurons": [fn(dict(o["neurons"][0]))] + o["neurons"][1:]}


def _run_yaml(body: str, tokens: list[str]):
    def make(fx, tmp):
        out = tmp / "out"
        # tiny budgets, so a config wrongly accepted finishes in seconds instead of running a real pipeline
        budget = {
            "neurons": "neurons: {n_math: 2, n_contrast: 2, k: 2, batch_size: 2, max_length: 16}\n",
            "train": "train: {max_steps: 1, batch_size: 2, max_length: 64}\n",
            "eval": "eval: {benches: [gsm8k], limit: 1, max_new_tokens: 2, discrimination: 0, base: false}\n",
            "methods": "methods: {dpo: {gamma: 0}}\n",
        }
        head = "".join(v for k, v in budget.items() if not body.startswith(k))
        p = _w(
            tmp / "bad_run.yaml",
            f"name: bad\nmodel: {fx['model']}\nout_root: {out}\npairs_file: {fx['pairs']}\n" + head + body,
        )
        return (["run", str(p)], ["bad_run.yaml", *tokens], out)

    return make


def _train_yaml(body: str, tokens: list[str]):
    def make(fx, tmp):
        out = tmp / "out"
        p = _w(tmp / "bad_train.yaml", f"model: {fx['model']}\npairs: {fx['pairs']}\nmax_steps: 1\n" + body)
        return (["train", str(p), "--out", str(out)], ["bad_train.yaml", *tokens], out)

    return make


def _cli(argv_fn: Callable[[dict, Path], list[str]], tokens: list[str]):
    def make(fx, tmp):
        out = tmp / "out"
        return (argv_fn(fx, out), tokens, out)

    return make


def _train_argv(*extra: str):
    return lambda fx, out: [
        "train",
        "--out",
        str(out),
        "--model",
        str(fx["model"]),
        "--pairs",
        str(fx["pairs"]),
        "--max_steps",
        "1",
        *extra,
    ]


def _pairs_argv(*extra: str):
    return lambda fx, out: [
        "pairs",
        "build",
        "--model",
        str(fx["model"]),
        "--out_dir",
        str(out),
        "--bench",
        "gsm8k",
        "--bench_file",
        str(fx["bench"]),
        "--limit",
        "2",
        *extra,
    ]


MALFORMED = [
    # pairs
    Case("pairs-bad-json", "pairs", "line 2 is not JSON", _train_on_pairs(_rows(GOOD, "{not json"), [":2"])),
    Case(
        "pairs-missing-chosen",
        "pairs",
        "line 1 lacks `chosen`",
        _train_on_pairs(_rows({"prompt": "q", "rejected": "r"}), [":1", "chosen"]),
    ),
    Case(
        "pairs-chosen-number",
        "pairs",
        "`chosen` is a number",
        _train_on_pairs(_rows({**GOOD, "chosen": 4}), [":1", "chosen"]),
    ),
    Case("pairs-empty-file", "pairs", "no rows at all", _train_on_pairs("", ["no"])),
    Case(
        "pairs-array-row",
        "pairs",
        "a row is a JSON list, not an object",
        _train_on_pairs(_rows(GOOD, "[1, 2]"), [":2"]),
    ),
    Case(
        "pairs-empty-prompt",
        "pairs",
        "`prompt` is an empty string",
        _train_on_pairs(_rows({**GOOD, "prompt": ""}), [":1", "prompt"]),
    ),
    Case(
        "pairs-chosen-equals-rejected",
        "pairs",
        "chosen and rejected are the same text",
        _train_on_pairs(_rows({**GOOD, "rejected": GOOD["chosen"]}), [":1", "rejected"]),
    ),
    Case(
        "pairs-mixed-formats",
        "pairs",
        "line 1 plain, line 2 Step-DPO",
        _train_on_pairs(_rows(GOOD, STEP), [":2", "initial_reason_steps"]),
    ),
    # Step-DPO pairs
    Case(
        "step-steps-number",
        "Step-DPO pairs",
        "`initial_reason_steps` is a number",
        _train_on_pairs(_rows({**STEP, "initial_reason_steps": 3}), [":1", "initial_reason_steps"]),
    ),
    Case(
        "step-missing-rejected",
        "Step-DPO pairs",
        "line 1 lacks `rejected`",
        _train_on_pairs(_rows({k: v for k, v in STEP.items() if k != "rejected"}), [":1", "rejected"]),
    ),
    Case(
        "step-then-plain",
        "Step-DPO pairs",
        "line 2 lacks `initial_reason_steps` (mixed formats)",
        _train_on_pairs(_rows(STEP, GOOD), [":2", "initial_reason_steps"]),
    ),
    # benchmark files
    Case(
        "bench-no-####",
        "benchmark (GSM8K format)",
        "`answer` has no '####' line",
        _eval_on_bench(_rows({"question": "q", "answer": "4"}), [":1", "answer"]),
    ),
    Case(
        "bench-missing-question",
        "benchmark (GSM8K format)",
        "line 1 lacks `question`",
        _eval_on_bench(_rows({"answer": "x\n#### 4"}), [":1", "question"]),
    ),
    Case(
        "bench-bad-json",
        "benchmark (GSM8K format)",
        "line 3 is not JSON",
        _eval_on_bench(
            _rows({"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "#### 2"}, "{oops"), [":3"]
        ),
    ),
    Case("bench-empty", "benchmark (GSM8K format)", "no rows", _eval_on_bench("", ["no"])),
    Case(
        "bench-answer-number",
        "benchmark (GSM8K format)",
        "`answer` is a number, not a string",
        _eval_on_bench(_rows({"question": "q", "answer": 4}), [":1", "answer"]),
    ),
    # NeuronSet
    Case("neurons-not-json", "NeuronSet", "not JSON", _train_on_neurons(lambda o: "{layers: [", [])),
    Case(
        "neurons-wrong-format",
        "NeuronSet",
        "`format` is not yfpo.neuronset/v1",
        _train_on_neurons(lambda o: {**o, "format": "other/v9"}, ["format"]),
    ),
    Case(
        "neurons-empty-list",
        "NeuronSet",
        "`neurons` is an empty list",
        _train_on_neurons(lambda o: {**o, "neurons": []}, ["neurons"]),
    ),
    Case(
        "neurons-missing-field",
        "NeuronSet",
        "neurons[0] lacks `layer`",
        _train_on_neurons(_edit_row(lambda r: {k: v for k, v in r.items() if k != "layer"}), ["neurons[0]", "layer"]),
    ),
    Case(
        "neurons-layer-out-of-range",
        "NeuronSet",
        "a layer beyond the model's layers",
        _train_on_neurons(_edit_row(lambda r: {**r, "layer": 99}), ["neurons[0]", "layer"]),
    ),
    Case(
        "neurons-index-out-of-range",
        "NeuronSet",
        "an index beyond the MLP width",
        _train_on_neurons(_edit_row(lambda r: {**r, "index": 10**6}), ["neurons[0]", "index"]),
    ),
    Case(
        "neurons-bool-layer",
        "NeuronSet",
        "a layer given as `true`",
        _train_on_neurons(_edit_row(lambda r: {**r, "layer": True}), ["neurons[0]", "layer"]),
    ),
    Case(
        "neurons-float-index",
        "NeuronSet",
        "an index given as 1.5",
        _train_on_neurons(_edit_row(lambda r: {**r, "index": 1.5}), ["neurons[0]", "index"]),
    ),
    Case(
        "neurons-duplicate",
        "NeuronSet",
        "the same (layer, index) twice",
        _train_on_neurons(lambda o: {**o, "neurons": [o["neurons"][0]] + o["neurons"]}, ["duplicate"]),
    ),
    Case(
        "neurons-zero-std",
        "NeuronSet",
        "a std of 0 (division by zero in phi)",
        _train_on_neurons(_edit_row(lambda r: {**r, "std": 0.0}), ["neurons[0]", "std"]),
    ),
    Case(
        "neurons-nan-score",
        "NeuronSet",
        "a NaN score",
        _train_on_neurons(_edit_row(lambda r: {**r, "score": float("nan")}), ["neurons[0]", "score"]),
    ),
    # run YAML
    Case("run-unknown-key", "run YAML", "a misspelt top-level key", _run_yaml("seedz: [0]\n", ["seedz"])),
    Case(
        "run-methods-list", "run YAML", "`methods` is a list, not a mapping", _run_yaml("methods: [dpo]\n", ["methods"])
    ),
    Case("run-seeds-string", "run YAML", "`seeds` is a word", _run_yaml("seeds: zero\n", ["seeds"])),
    Case(
        "run-yaml-syntax", "run YAML", "an unclosed bracket on line 8", _run_yaml("eval: {benches: [gsm8k\n", [":8:"])
    ),
    Case(
        "run-method-unknown-key",
        "run YAML",
        "a method with a misspelt train key",
        _run_yaml("methods: {dpo: {gama: 0}}\n", ["gama"]),
    ),
    Case(
        "run-eval-limit-negative",
        "run YAML",
        "`eval.limit` is -3",
        _run_yaml("eval: {limit: -3, max_new_tokens: 2, discrimination: 0, base: false}\n", ["limit"]),
    ),
    # train YAML
    Case("train-unknown-key", "train YAML", "a misspelt key", _train_yaml("gama: 1\n", ["gama"])),
    Case("train-gamma-word", "train YAML", "`gamma` is a word", _train_yaml("gamma: abc\n", ["gamma"])),
    Case("train-lr-negative", "train YAML", "`lr` is negative", _train_yaml("lr: -1\n", ["lr"])),
    Case("train-loss-type", "train YAML", "an unknown `loss_type`", _train_yaml("loss_type: foo\n", ["loss_type"])),
    # CLI values
    Case(
        "cli-train-gamma-word", "CLI value", "`yfpo train --gamma abc`", _cli(_train_argv("--gamma", "abc"), ["gamma"])
    ),
    Case(
        "cli-train-beta-negative",
        "CLI value",
        "`yfpo train --beta -0.1`",
        _cli(_train_argv("--beta", "-0.1"), ["beta"]),
    ),
    Case(
        "cli-train-batch-zero",
        "CLI value",
        "`yfpo train --batch_size 0`",
        _cli(_train_argv("--batch_size", "0"), ["batch_size"]),
    ),
    Case(
        "cli-eval-limit-negative",
        "CLI value",
        "`yfpo eval --limit -3`",
        _cli(
            lambda fx, out: [
                "eval",
                "--model",
                str(fx["model"]),
                "--bench",
                "gsm8k",
                "--bench-file",
                str(fx["bench"]),
                "--limit",
                "-3",
                "--out",
                str(out),
            ],
            ["limit"],
        ),
    ),
    Case("cli-pairs-k-zero", "CLI value", "`yfpo pairs build --k 0`", _cli(_pairs_argv("--k", "0"), ["k"])),
    Case(
        "cli-pairs-temperature-negative",
        "CLI value",
        "`yfpo pairs build --temperature -1`",
        _cli(_pairs_argv("--temperature", "-1"), ["temperature"]),
    ),
    Case(
        "cli-neurons-k-negative",
        "CLI value",
        "`yfpo neurons find --k -1`",
        _cli(
            lambda fx, out: ["neurons", "find", "--model", str(fx["model"]), "--out", str(out / "n.json"), "--k", "-1"],
            ["k"],
        ),
    ),
]


def _names(line: str, token: str) -> bool:
    return token.lower() in line.lower()


def check_case(case: Case, fx: dict, tmp: Path) -> tuple[bool, str]:
    """Run one malformed input in-process: (passed, the error line or what went wrong)."""
    from yfpo.cli import main

    tmp.mkdir(parents=True, exist_ok=True)
    argv, tokens, out = case.make(fx, tmp)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # an uncaught exception is a traceback for the user
            return False, f"uncaught {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    lines = [ln for ln in err.getvalue().splitlines() if "error" in ln.lower()]
    text = lines[-1] if lines else err.getvalue().strip().splitlines()[-1:] or [""]
    text = text if isinstance(text, str) else text[0]
    if rc == 0:
        return False, "accepted (exit 0)"
    if len(lines) != 1:
        return False, f"{len(lines)} error lines: {err.getvalue().strip()[:200]!r}"
    missing = [t for t in tokens if not _names(text, t)]
    if missing:
        return False, f"error does not name {missing}: {text[:240]}"
    if out.exists() and any(out.rglob("*")) or (out.exists() and out.is_file()):
        return False, f"wrote {out} before failing: {text[:200]}"
    return True, text[:240]


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="trials per target")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    ap.add_argument("--work", default="/tmp/yfpo_fault_injection", help="scratch folder (wiped per target)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    ap.add_argument("--malformed", action="store_true", help="run only the malformed-input table")
    ap.add_argument("--no-malformed", action="store_true", help="skip the malformed-input table")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the results as Markdown tables here (for docs/reliability.md)")
    args = ap.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", YFPO_NO_PROGRESS="1")
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    fx = make_fixtures(work / "fixtures")
    results: dict = {
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "ignored_keys": sorted(IGNORED_KEYS),
        "work": str(work),
    }
    if not args.malformed:
        rng = random.Random(args.seed)
        results["startup_s"] = {}
        results["targets"] = []
        for name in args.targets.split(","):
            t_start = startup_time()  # per target: on a machine whose load changes, the kill window follows it
            results["startup_s"][name] = round(t_start, 2)
            print(f"[fault injection] {name}: reference run, then {args.trials} trials", flush=True)
            r = fault_inject(TARGETS[name], fx, work, args.trials, rng, t_start)
            results["targets"].append(vars(r))
            print(json.dumps(vars(r)), flush=True)
    if not args.no_malformed:
        rows = []
        for i, case in enumerate(MALFORMED):
            ok, msg = check_case(case, fx, work / "malformed" / case.id)
            rows.append({"id": case.id, "kind": case.kind, "what": case.what, "passed": ok, "message": msg})
            print(f"{'PASS' if ok else 'FAIL'} {case.id}: {msg}", flush=True)
        results["malformed"] = rows
        print(f"malformed inputs: {sum(r['passed'] for r in rows)}/{len(rows)} pass")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown_tables(results))
    bad = any(t["mismatched_trials"] for t in results.get("targets", [])) or not all(
        r["passed"] for r in results.get("malformed", [])
    )
    return 1 if bad else 0


def markdown_tables(results: dict) -> str:
    """The trial table and the malformed-input table of one run, as docs/reliability.md shows them."""
    out = [f"Commit {results.get('commit')}."]
    if results.get("targets"):
        out += [
            "",
            "| target | start-up (s) | reference wall (s) | trials | kills | finished first | resumes | resume failures "
            "| mismatched trials | what differed |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for t in results["targets"]:
            st = (results.get("startup_s") or {}).get(t["target"], "")
            diff = "; ".join(t["mismatches"] or []) or "—"
            out.append(
                f"| {t['target']} | {st} | {t['ref_wall_s']} | {t['trials']} | {t['kills']} | "
                f"{t['finished_before_kill']} | {t['resumes']} | {t['resume_failures']} | {t['mismatched_trials']} "
                f"| {diff} |"
            )
    if results.get("malformed"):
        rows = results["malformed"]
        out += [
            "",
            f"Malformed inputs: {sum(r['passed'] for r in rows)} of {len(rows)} pass.",
            "",
            "| id | input | defect | result | error printed |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            msg = r["message"].replace(results.get("work", "\0"), "…").replace("|", "\\|")
            out.append(f"| {r['id']} | {r['kind']} | {r['what']} | {'pass' if r['passed'] else 'FAIL'} | {msg} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
