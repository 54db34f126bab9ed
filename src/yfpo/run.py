"""`yfpo run CONFIG`: the whole pipeline, each stage cached by the hash of its inputs and config.

    plan (every stage's config built and validated, nothing written) -> neurons (+ the control sets the
    methods name) -> (causal check) -> pairs -> reference log-probs -> train each method x seed
    -> eval (base + every model) -> report

Run directory (runs/<name>/ unless out_root says otherwise):
    config.yaml                              the resolved run config (methods with gammas expanded and
                                             each method's `neurons` and `gamma` written out)
    run.json                                 index: every stage, its folder, hash and status
    stages/neurons-<hash>/neurons.json       NeuronSet (the run's own; another selection a method names,
                                             e.g. `neurons: lape`, gets its own folder of the same kind)
    stages/neurons-random-<hash>/            a control set (random per training seed, or flipped)
    stages/check-<hash>/                     causal ablation check (when `check:` is set)
    stages/pairs-<hash>/pairs.jsonl          pairs (+ samples.jsonl, summary.json)
    stages/reference-<hash>/                 reference log-probs + m_ref, shared by every method and seed
    train/<method>-s<seed>-<hash>/           trainer run dir (final/, metrics.jsonl, done.json)
    eval/<method>-s<seed>-<hash>/<bench>/    items.jsonl + summary.json; .../discrimination/
    eval/base-<hash>/<bench>/                the untrained model
    report/report.md, report.html            built last

A stage folder's name carries the hash of its resolved config plus the hashes of the stages it reads,
so changing anything a stage depends on gives it a new folder (and reruns it and everything downstream),
while unchanged stages are found finished and skipped. `done.json` is written last in each folder; a
folder without it is an interrupted stage, which the stage's own resume picks up (append-only files for
pairs and eval, checkpoints for training). Code changes do not change hashes: delete a folder to redo it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yfpo.eval.config import EvalConfig, check_bench
from yfpo.eval.config import field_names as eval_field_names

DEFAULT_METHODS = {
    "dpo": {"gamma": 0.0},
    "yfpo": {"gamma": 1.0},
    # the control: the same reward on random neurons with the same per-layer counts (SPEC section 3, "Controls")
    "yfpo_random": {"gamma": 1.0, "neurons": "random"},
    # FDT changes only the output layer's gradient, which LoRA freezes: the FDT methods fine-tune fully
    "dpo_fdt": {"gamma": 0.0, "fdt": True, "lora": False, "lr": 5e-6},
    "yfpo_fdt": {"gamma": 1.0, "fdt": True, "lora": False, "lr": 5e-6},
}
# method keys that `yfpo run` reads itself; every other method key is a TrainConfig field
#   neurons: which NeuronSet the method's reward uses (neurons/controls.py KINDS; default: the run's own set)
#   gammas: [g1, g2, ...] expands the method into one method per gamma, named <method>_g<g>
METHOD_KEYS = ("neurons", "gammas", "trainer")
TRAINERS = ("dpo", "grpo")  # a method's `trainer:` (dpo: the DPO-family trainer of `yfpo train`; grpo: `yfpo grpo`)
# per stage kind, the config fields that only say where a stage reads/writes or how visibly it works: they do
# not enter its hash (what they point to enters through the stage's inputs: model identity, input stage hashes)
_NO_HASH = {
    "neurons": {"model", "out", "progress"},
    "neurons_selection": {"model", "out", "progress"},  # another selection a method names (e.g. neurons: lape)
    "check": {"model", "neurons", "out_dir", "progress"},
    "pairs": {"model", "out_dir", "progress"},
    "train": {"model", "pairs", "neurons", "output_dir", "name", "ref_logps", "keep_checkpoints"},
}
# keys that choose only the form a result is stored in (a LoRA run's final/: adapter or merged; loaders take both),
# hashed at the value every folder made before they were storage keys was hashed with, so that changing them (or
# their default, merge_final: True -> False on 2026-12-08) redoes no stage
_HASH_AS = {"train": {"merge_final": True}}

# per stage kind, config fields added after runs were made: left out of the hash at their defaults (those runs stay
# cached), part of it otherwise
_ADDED_AT_DEFAULT = {"pairs": {"mode": "default"}}


@dataclass
class EvalSection(EvalConfig):
    """The run config's `eval:` section: an EvalConfig (benches, tasks, limit, protocol, sampling, ...: one
    definition, yfpo.eval.config) plus what only a run has. dtype and device are the run's own (top level)."""

    limit: int | None = 50
    discrimination: int = 200  # held-out solution pairs for pair discrimination (0 = skip)
    discrimination_batch_size: int = 8
    base: bool = True  # also evaluate the untrained model (method "base")
    # MMLU retention (yfpo.eval.mmlu, no generation): this many questions per subject of the non-math MMLU test
    # subjects and of MMLU-Redux "ok"; the report shows them as benches mmlu_non_math / mmlu_redux_ok (0 = skip)
    mmlu: int = 0
    mmlu_batch_size: int = 8


# eval keys added after runs were made: left out of the stage hash at their defaults, so those runs stay cached
_EVAL_KEY_DEFAULTS = {
    "samples": 1,
    "temperature": 0.0,
    "top_p": 1.0,
    "protocol": "chat-zero-shot-cot-v1",
    "tasks": [],
    "shots_file": None,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "hub": None,
    "overwrite": False,
}
# EvalConfig keys a run sets itself (dtype, device: the top-level ones; hub: YFPO_HUB; overwrite: the stages):
# refused in the eval section, so always at their defaults above
_EVAL_RUN_OWNED = ("dtype", "device", "hub", "overwrite")


@dataclass
class RunConfig:
    """`yfpo run`: one YAML file that reads like the experiment."""

    name: str = "quick"
    model: str = "default"
    out_root: str = "runs"
    seeds: list[int] = field(default_factory=lambda: [0])
    dtype: str = "float32"
    device: str = "cpu"
    neurons: dict[str, Any] = field(default_factory=dict)  # NeuronsConfig keys
    check: dict[str, Any] | None = None  # CheckConfig keys; absent/null = no causal check
    pairs: dict[str, Any] = field(default_factory=dict)  # PairsConfig keys
    pairs_file: str | None = None  # use this pairs JSONL instead of building pairs
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys shared by every method
    # GRPORunConfig keys shared by the methods with `trainer: grpo` (online RL on benchmark questions)
    grpo: dict[str, Any] = field(default_factory=dict)
    # each method: TrainConfig keys on top of `train` (GRPORunConfig keys on top of `grpo` for `trainer: grpo`),
    # plus METHOD_KEYS (neurons, gammas, trainer)
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_METHODS)))
    eval: EvalSection = field(default_factory=EvalSection)
    # reference log-probs (and the neuron margin m_ref) computed once per model x pairs x tokenization and fed
    # to every method and seed (TrainConfig.ref_logps); off: each training computes its own
    ref_logps: bool = True
    report: bool = True
    # every training stage through `accelerate launch` (DDP, FSDP, ...): {config_file: configs/accelerate/ddp.yaml,
    # num_processes: 2}; null = in this process. The global batch stays the config's (each process gets
    # batch_size / num_processes pairs), so the stage hashes, the cache and the results do not depend on it.
    # CLI: --launch.config_file F --launch.num_processes N
    launch: dict[str, Any] | None = None


class StageFailed(RuntimeError):
    """A stage could not finish; the message is one line: what failed, in which folder, what to do."""


def load_run_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> RunConfig:
    from yfpo.config import load_config

    return load_config(RunConfig, path, overrides)


# ----------------------------------------------------------------------------- hashing


def model_identity(name_or_path: str) -> dict:
    """What a model's stage hash depends on: {"name": yfpo.resume.model_identity} (the one model fingerprint: a hub
    id or alias as itself, a local folder by its name and a fingerprint of its files)."""
    from yfpo import resume

    return {"name": resume.model_identity(name_or_path)}


def stage_hash(kind: str, config: dict, inputs: dict) -> str:
    """Hash of a stage: its kind, its config without location/verbosity fields, and its inputs' hashes."""
    from yfpo.utils import stable_hash

    added = _ADDED_AT_DEFAULT.get(kind, {})
    cfg = {k: v for k, v in config.items() if k not in _NO_HASH.get(kind, ()) and not (k in added and v == added[k])}
    cfg.update({k: v for k, v in _HASH_AS.get(kind, {}).items() if k in cfg})
    return stable_hash({"kind": kind, "config": cfg, "inputs": inputs}, n=10)


# ----------------------------------------------------------------------------- methods


def _number(x: Any) -> Any:
    """A numeric string from a CLI override ("0.5") as a float, so the recorded config says gamma: 0.5; anything
    else unchanged (TrainConfig's own check names a bad value)."""
    try:
        return float(x) if isinstance(x, (str, int)) and not isinstance(x, bool) else x
    except ValueError:
        return x


def _gamma_tag(g: float) -> str:
    return f"{float(g):g}"


def resolve_methods(rc: RunConfig) -> dict[str, dict[str, Any]]:
    """The run's methods with `gammas` expanded (yfpo: {gammas: [0.5, 2]} -> yfpo_g0.5, yfpo_g2) and every
    method's `neurons` and `gamma` written out, so the recorded run config says what each method used."""
    from yfpo.neurons.controls import kind_of_method, normalise_kind
    from yfpo.train.config import TrainConfig

    default_kind = kind_of_method(rc.neurons.get("method", "attnlrp"))
    default_gamma = rc.train.get("gamma", TrainConfig.gamma)
    out: dict[str, dict[str, Any]] = {}
    for name, keys in rc.methods.items():
        if not isinstance(keys or {}, dict):
            raise ValueError(f"run config: methods.{name} must be a mapping of TrainConfig keys, got {keys!r}")
        keys = dict(keys or {})
        keys["neurons"] = normalise_kind(keys.get("neurons", default_kind), where=f"methods.{name}.neurons")
        trainer = keys.get("trainer", "dpo")
        if trainer not in TRAINERS:
            raise ValueError(
                f"run config: methods.{name}.trainer must be one of {', '.join(TRAINERS)}, got {trainer!r}"
            )
        if trainer == "grpo":
            if "gamma" in keys or "gammas" in keys:
                raise ValueError(
                    f"run config: methods.{name} (trainer: grpo) takes neuron_reward_weight / neuron_loss_weight, "
                    "not gamma/gammas"
                )
            out[name] = {**keys, "trainer": "grpo"}
            continue
        gammas = keys.pop("gammas", None)
        if gammas is None:
            out[name] = {**keys, "gamma": _number(keys.get("gamma", default_gamma))}
            continue
        if "gamma" in keys:
            raise ValueError(f"run config: methods.{name} has both gamma and gammas; keep one")
        if not isinstance(gammas, list) or not gammas:
            raise ValueError(f"run config: methods.{name}.gammas must be a non-empty list of numbers, got {gammas!r}")
        for g in gammas:
            try:
                g = float(g)
            except (TypeError, ValueError):
                raise ValueError(f"run config: methods.{name}.gammas: {g!r} is not a number") from None
            sub = f"{name}_g{_gamma_tag(g)}"
            if sub in rc.methods or sub in out:
                raise ValueError(f"run config: methods.{name}.gammas makes {sub!r}, which is already a method")
            out[sub] = {**keys, "gamma": g}
    return out


def neuron_key(kind: str, seed: int) -> str:
    """Which NeuronSet a method x seed uses: random controls are drawn per training seed, the rest are shared."""
    return f"random-s{seed}" if kind == "random" else kind


def train_config(
    rc: RunConfig,
    method: str,
    keys: dict,
    seed: int,
    pairs_path: Path,
    neurons_path: Path,
    out_dir: Path,
    ref_logps: Path | None = None,
):
    """TrainConfig for one method x seed (validated): the shared `train` keys, then the method's own keys,
    then the run's model/pairs/neurons/output/seed (dtype and device unless the train section sets them).
    A `trainer: grpo` method gets its GRPORunConfig (grpo_config)."""
    from yfpo.train.config import TrainConfig

    if keys.get("trainer") == "grpo":
        return grpo_config(rc, method, keys, seed, neurons_path, out_dir)
    paths = {"pairs": pairs_path, "neurons": neurons_path, "output_dir": out_dir}
    if ref_logps is not None:
        paths["ref_logps"] = ref_logps
    return _method_config(rc, TrainConfig, rc.train, "train", method, keys, seed, paths)


def grpo_config(rc: RunConfig, method: str, keys: dict, seed: int, neurons_path: Path, out_dir: Path):
    """GRPORunConfig for one `trainer: grpo` method x seed (validated): the `grpo` section, the method's keys,
    then the run's model/neurons/output/seed (dtype and device unless the grpo section sets them)."""
    from yfpo.train.grpo_config import GRPORunConfig

    paths = {"neurons": neurons_path, "output_dir": out_dir}
    return _method_config(rc, GRPORunConfig, rc.grpo, "grpo", method, keys, seed, paths)


def _method_config(rc: RunConfig, cls, section: dict, where: str, method: str, keys: dict, seed: int, paths: dict):
    """cls from the run's `where` section, the method's own keys (METHOD_KEYS aside), then the run's model,
    seed, name and `paths`; validated, errors naming the method and section."""
    from yfpo.config import from_dict

    data = {**section, **{k: v for k, v in keys.items() if k not in METHOD_KEYS}}
    data.setdefault("dtype", rc.dtype)
    data.setdefault("device", rc.device)
    data.update(model=rc.model, seed=seed, name=f"{rc.name}/{method}-s{seed}", **{k: str(v) for k, v in paths.items()})
    cfg = from_dict(cls, data, prefix=f"methods.{method}/{where}.")
    try:
        return cfg.validate()
    except ValueError as e:
        raise ValueError(f"run config: methods.{method} (with the {where} section): {e}") from None


# the TrainConfig fields that decide the reference log-probs of a pairs file (tokenization and precision)
REF_KEYS = (
    "max_length",
    "max_prompt_length",
    "max_completion_length",
    "truncation_mode",
    "limit_pairs",
    "step_dpo",
    "dtype",
    "device",
)


def reference_supported() -> bool:
    """Whether the trainer takes precomputed reference log-probs (TrainConfig.ref_logps + train/reference.py).
    Transitional: goes when train/reference.py is part of every build."""
    from yfpo.train.config import TrainConfig

    if "ref_logps" not in _fields(TrainConfig):
        return False
    try:
        from yfpo.train.precompute import compute_reference  # noqa: F401
    except ImportError:
        return False
    return True


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- validation


def check_model_name(model: str) -> None:
    """A model that looks like a local path must exist (a hub id or alias is checked when loaded)."""
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"run config: model folder {model} does not exist")


def check_benches(benches: list[str], data_dir: str | None, where: str) -> None:
    """Every benchmark named is known and its data file is on disk (the Hub only when YFPO_HUB=1)."""
    for bench in benches:
        check_bench(bench, data_dir, f"run config: {where}")


def check_mmlu(ev: EvalSection) -> None:
    """eval.mmlu is a count per subject, and the MMLU files are on disk when it is on."""
    from yfpo.data.problems import candidate_data_dirs, find_data_file
    from yfpo.eval.mmlu import DATA_FILES

    if not isinstance(ev.mmlu, int) or isinstance(ev.mmlu, bool) or ev.mmlu < 0:
        raise ValueError(f"run config: eval.mmlu: expected questions per subject (an integer >= 0), got {ev.mmlu!r}")
    for rel in DATA_FILES if ev.mmlu else ():
        if find_data_file(rel, ev.data_dir) is None:
            looked = ", ".join(str(d / rel) for d in candidate_data_dirs(ev.data_dir))
            raise FileNotFoundError(f"run config: eval.mmlu: no {rel} (looked in {looked}); set eval.data_dir")


def check_grpo_overlap(train: dict, ev: EvalSection) -> None:
    """A GRPO method must not train on the questions its models are evaluated on: with questions from an eval
    benchmark (no questions_file), its first skip_questions must cover the eval slice (eval.limit items)."""
    for (method, _seed), cfg in train.items():
        if not hasattr(cfg, "skip_questions") or cfg.questions_file or cfg.questions not in ev.benches:
            continue
        if getattr(cfg, "mode", "questions") == "rlpt":  # trains on rlpt_corpus texts, not on these questions
            continue
        if ev.limit is None or cfg.skip_questions < ev.limit:
            raise ValueError(
                f"run config: methods.{method} (trainer: grpo) trains on {cfg.questions} questions from "
                f"#{cfg.skip_questions}, which overlap the evaluation's first {ev.limit or 'all'} items; set "
                f"grpo.skip_questions >= eval.limit ({ev.limit}) or train on another benchmark"
            )


def check_neurons_inputs(ncfg) -> None:
    """The corpora stage 1 reads are known and its `match` file (if any) exists."""
    from yfpo.data.corpora import CONTRAST_SOURCES

    for src in (x.strip() for x in ncfg.contrast_sources.split(",") if x.strip()):
        if src not in CONTRAST_SOURCES:
            raise ValueError(
                f"run config: neurons.contrast_sources: unknown source {src!r}; known: {', '.join(CONTRAST_SOURCES)}"
            )
    if ncfg.match and not Path(ncfg.match).exists():
        raise FileNotFoundError(f"run config: neurons.match {ncfg.match} does not exist")


# ----------------------------------------------------------------------------- the stages' functions


def _run_neurons(cfg) -> Path:
    from yfpo.neurons.find import find_neurons

    return find_neurons(cfg)


def _run_control(kind: str, source: Path, out: Path, seed: int) -> Path:
    from yfpo.neurons.controls import derive_control

    return derive_control(kind, source, out, seed=seed)


def _run_check(cfg) -> dict:
    from yfpo.neurons.check import causal_check

    return causal_check(cfg)


def _run_pairs(cfg) -> Path:
    from yfpo.pairs.build import build_pairs

    return build_pairs(cfg)


def _run_reference(cfg, neurons: dict[str, str], out_dir: Path) -> Path:
    """Reference log-probs + m_ref of every NeuronSet in `neurons` ({label: path}: attnlrp, lape, flipped,
    random-s0, ...) for `cfg`, one (method, seed) of a group with the same REF_KEYS (model and pairs set); the
    file is what TrainConfig.ref_logps takes (a training finds its m_ref by its NeuronSet's digest)."""
    from yfpo.neurons.neuronset import NeuronSet
    from yfpo.train.precompute import compute_reference

    sets = {label: NeuronSet.load(path) for label, path in neurons.items()}
    return compute_reference(cfg, neuron_sets=sets, out=Path(out_dir) / "reference.json")


def _run_grpo(cfg) -> Path:
    from yfpo.train.grpo import grpo

    return grpo(cfg)


def _run_train(cfg) -> Path:
    from yfpo.train.trainer import train

    return train(cfg)


LAUNCH_KEYS = ("config_file", "num_processes", "main_process_port")


def check_launch(launch: dict | None) -> None:
    """Refuse a bad `launch:` section before any stage runs."""
    if launch is None:
        return
    unknown = sorted(set(launch) - set(LAUNCH_KEYS))
    if unknown:
        raise ValueError(f"run config: launch: unknown key(s) {', '.join(unknown)}; expected {', '.join(LAUNCH_KEYS)}")
    try:
        n = int(launch.get("num_processes", 0))
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(
            f"run config: launch.num_processes: expected an integer >= 1, got {launch.get('num_processes')!r}"
        )
    cf = launch.get("config_file")
    if not cf or not Path(cf).is_file():
        raise ValueError(f"run config: launch.config_file: {cf!r} is not a file (an accelerate config YAML)")


def launch_training(cfg, launch: dict, command: str = "train") -> Path:
    """One training (`yfpo train` / `yfpo grpo`) on launch.num_processes processes through `accelerate launch
    --config_file launch.config_file`; each process gets batch_size / num_processes examples a step, so the global
    batch (and with it every logged loss, up to float rounding) is the one-process run's. Returns the run dir."""
    import socket
    import subprocess
    import sys

    from yfpo.config import save_config

    n = int(launch["num_processes"])
    if cfg.batch_size % n:
        raise ValueError(
            f"launch.num_processes {n}: the training's batch_size {cfg.batch_size} does not split into {n} equal "
            "per-process batches (the global batch must stay the configured one)"
        )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_process = dataclasses.replace(cfg, batch_size=cfg.batch_size // n)
    save_config(per_process, out / "launch_config.yaml")
    port = launch.get("main_process_port")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(launch["config_file"]),
        "--num_processes",
        str(n),
        "--main_process_port",
        str(port),
        "-m",
        "yfpo.cli",
        command,
        str(out / "launch_config.yaml"),
        "--out",
        str(out),
    ]
    with open(out / "launch.log", "a") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = (out / "launch.log").read_text()[-1500:]
        raise RuntimeError(f"accelerate launch of {out} exited {r.returncode} (log: {out / 'launch.log'}): ...{tail}")
    return out


def _run_evals(model_path: str, jobs: list[dict], **kw) -> list[dict]:
    from yfpo.eval.bench import run_evals

    return run_evals(model_path, jobs, **kw)


def _evals_one_by_one(run_eval: Callable) -> Callable:
    """An `evals` runner made of an `eval` one (run_eval's signature, one benchmark a call)."""

    def run(model_path: str, jobs: list[dict], **kw) -> list[dict]:
        return [run_eval(model_path, j["bench"], **kw, **{k: v for k, v in j.items() if k != "bench"}) for j in jobs]

    return run


def _run_discrimination(model_path: str, *, limit: int, out_dir: str, batch_size: int, dtype: str, device: str) -> dict:
    from yfpo.eval.discrimination import run_discrimination
    from yfpo.models.loading import load_model

    model, tok = load_model(model_path, dtype=dtype, device=device)
    return run_discrimination(model, tok, limit=limit, out_dir=out_dir, batch_size=batch_size)


def _run_mmlu(
    model_path: str, *, per_subject: int, out_dir: str, data_dir, batch_size: int, dtype: str, device: str
) -> dict:
    from yfpo.eval.mmlu import run_mmlu
    from yfpo.models.loading import load_model

    model, tok = load_model(model_path, dtype=dtype, device=device)
    return run_mmlu(model, tok, per_subject=per_subject, out_dir=out_dir, data_dir=data_dir, batch_size=batch_size)


RUNNERS = {
    "neurons": _run_neurons,
    "control": _run_control,
    "check": _run_check,
    "pairs": _run_pairs,
    "reference": _run_reference,
    "train": _run_train,
    "grpo": _run_grpo,
    "evals": _run_evals,  # every pending benchmark of one model, one generation pass
    "discrimination": _run_discrimination,
    "mmlu": _run_mmlu,
}


# ----------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """Every stage's config, built and validated before any work (nothing is written while planning)."""

    methods: dict[str, dict[str, Any]]  # resolved: gammas expanded, neurons and gamma explicit
    neurons: Any  # NeuronsConfig of the run's own set
    selections: dict[str, Any]  # other selection kinds a method uses -> their NeuronsConfig
    controls: list[str]  # neuron keys derived from the run's set: "flipped", "random-s<seed>"
    check: Any | None  # CheckConfig
    pairs: Any | None  # PairsConfig (None with pairs_file)
    train: dict[tuple[str, int], Any]  # (method, seed) -> TrainConfig (placeholder paths)
    ref_logps: bool  # the shared reference stage runs


def make_plan(rc: RunConfig) -> Plan:
    """Build every stage's config from the run config and validate it: unknown keys, wrong types, invalid
    combinations (fdt + lora, ...), unknown benchmarks and missing files all fail here, before any work."""
    from yfpo.config import from_dict
    from yfpo.neurons.config import CheckConfig, NeuronsConfig
    from yfpo.neurons.controls import SELECTIONS
    from yfpo.neurons.find import METHODS as FIND_METHODS
    from yfpo.pairs.config import PairsConfig

    if not rc.methods:
        raise ValueError("run config: `methods` is empty; name at least one (e.g. dpo: {gamma: 0})")
    if not rc.seeds:
        raise ValueError("run config: `seeds` is empty")
    ev = rc.eval
    for name in ("discrimination_batch_size",):
        v = getattr(ev, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(
                f"run config: eval.{name} must be an integer >= 1{' (or null for all)' if name == 'limit' else ''}, got {v!r}"
            )
    if isinstance(ev.discrimination, bool) or not isinstance(ev.discrimination, int) or ev.discrimination < 0:
        raise ValueError(
            f"run config: eval.discrimination must be an integer >= 0 (0 = skip), got {ev.discrimination!r}"
        )
    check_model_name(rc.model)
    base = {"dtype": rc.dtype, "device": rc.device, "model": rc.model}
    ncfg = from_dict(NeuronsConfig, {**base, **rc.neurons, "model": rc.model}, prefix="neurons.")
    if ncfg.method not in FIND_METHODS:
        raise ValueError(f"run config: neurons.method must be one of {', '.join(FIND_METHODS)}, got {ncfg.method!r}")
    if ncfg.method not in SELECTIONS.values():
        raise ValueError(
            f"run config: neurons.method {ncfg.method!r} is not a selection; for a random-neuron "
            "control give a method `neurons: random`"
        )
    check_neurons_inputs(ncfg)
    methods = resolve_methods(rc)
    selections, controls = needed_neuron_sets(ncfg, methods, rc.seeds)
    ccfg = None
    if rc.check is not None:
        ccfg = from_dict(CheckConfig, {**base, **rc.check, "model": rc.model}, prefix="check.")
    pcfg = None if rc.pairs_file else from_dict(PairsConfig, {**base, **rc.pairs, "model": rc.model}, prefix="pairs.")
    check_pairs_inputs(rc.pairs_file, pcfg)
    ref = rc.ref_logps and reference_supported()
    placeholder = Path("<planned>")
    train = {
        (m, seed): train_config(rc, m, keys, seed, placeholder, placeholder, placeholder, placeholder if ref else None)
        for m, keys in methods.items()
        for seed in rc.seeds
    }
    owned = [k for k in _EVAL_RUN_OWNED if getattr(ev, k) != getattr(EvalConfig(), k)]
    if owned:
        raise ValueError(f"run config: eval.{owned[0]} is set by the run (dtype, device: the top-level keys)")
    ev.validate(
        prefix="run config: eval."
    )  # benchmarks (did-you-mean), their data, limits, sampling, protocol, task specs
    check_mmlu(rc.eval)
    check_grpo_overlap(train, rc.eval)
    check_launch(rc.launch)
    return Plan(methods, ncfg, selections, controls, ccfg, pcfg, train, ref)


def needed_neuron_sets(ncfg, methods: dict[str, dict], seeds: list[int]) -> tuple[dict[str, Any], list[str]]:
    """The NeuronSets the methods name besides the run's own: other selections ({kind: NeuronsConfig}, the
    run's neurons section with another method) and derived controls (["flipped", "random-s<seed>", ...])."""
    from yfpo.neurons.controls import SELECTIONS, kind_of_method, selection_method

    own = kind_of_method(ncfg.method)
    selections: dict[str, Any] = {}
    controls: list[str] = []
    for keys in methods.values():
        kind = keys["neurons"]
        if kind in SELECTIONS and kind != own and kind not in selections:
            selections[kind] = dataclasses.replace(ncfg, method=selection_method(kind))
        elif kind == "flipped" and "flipped" not in controls:
            controls.append("flipped")
        elif kind == "random":
            controls += [k for k in (neuron_key("random", s) for s in seeds) if k not in controls]
    return selections, controls


def check_pairs_inputs(pairs_file: str | None, pcfg) -> None:
    """The pairs file, or the pairs stage's question file / benchmark, is on disk."""
    if pairs_file:
        if not Path(pairs_file).exists():
            raise FileNotFoundError(f"run config: pairs_file {pairs_file} does not exist")
    elif pcfg.bench_file:
        if not Path(pcfg.bench_file).exists():
            raise FileNotFoundError(f"run config: pairs.bench_file {pcfg.bench_file} does not exist")
    else:
        check_benches([pcfg.bench], pcfg.data_dir, "pairs.bench")


# ----------------------------------------------------------------------------- the pipeline


class Pipeline:
    """Plans every stage (validated), then runs them in order; each stage is cached in its own folder."""

    def __init__(
        self,
        rc: RunConfig,
        hook: Callable[[str], None] | None = None,
        log: Callable[[str], None] = print,
        runners: dict[str, Callable] | None = None,
        write_report: bool = True,
    ):
        self.rc = rc
        self.write_report = write_report  # False in `yfpo run --workers` helper processes: the main one writes it
        self.runners = {**RUNNERS, **(runners or {})}
        if "eval" in self.runners and "evals" not in (runners or {}):  # a one-benchmark runner given (tests)
            self.runners["evals"] = _evals_one_by_one(self.runners["eval"])
        self.dir = Path(rc.out_root) / rc.name
        self.hook = hook
        self.log = log
        self.index: dict[str, Any] = {"name": rc.name, "run_dir": str(self.dir), "stages": []}
        self.mid: dict = {}

    # -- bookkeeping
    def _rel(self, p: str | Path) -> str:
        """A path inside the run dir, relative to it (so the run dir can be moved)."""
        return str(Path(p).resolve().relative_to(self.dir.resolve()))

    def _write_index(self) -> None:
        from yfpo.config import to_dict
        from yfpo.utils import atomic_write_json, now

        self.index.update(config=to_dict(self.rc), updated=now())
        # another process on this run dir (same config) may have recorded stages this one has not visited yet:
        # keep them; a run.json of another config (an earlier run) contributes nothing
        path = self.dir / "run.json"
        try:
            doc = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            doc = {}
        same = json.dumps(doc.get("config"), sort_keys=True, default=str) == json.dumps(
            json.loads(json.dumps(self.index["config"], default=str)), sort_keys=True, default=str
        )
        theirs = doc.get("stages", []) if same else []
        mine = {s["name"] for s in self.index["stages"]}
        self.index["stages"] += [s for s in theirs if s.get("name") not in mine and (self.dir / s["dir"]).exists()]
        atomic_write_json(path, self.index)

    def _lock(self, folder: Path, wait: bool):
        """An exclusive lock on a stage folder (flock on a sibling file, so it dies with its process): two
        `yfpo run` processes on one run dir never work on the same stage. Returns the open lock file, or None
        when `wait` is False and another process holds it."""
        import fcntl

        lock = self.dir / ".locks" / (folder.relative_to(self.dir).as_posix().replace("/", "__") + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return None
        return f

    def stage(
        self,
        name: str,
        kind: str,
        rel: str,
        config: dict,
        inputs: dict,
        fn: Callable[[Path], dict],
        meta: dict | None = None,
        defer: bool = False,
    ) -> dict | None:
        """Run `fn(folder)` unless the folder's done.json exists; returns the done record. An error in `fn`
        becomes a one-line StageFailed naming the stage, its folder and what to do.

        The stage runs under a lock on its folder: another `yfpo run` on the same run dir waits for it, or, with
        `defer` (independent units: trainings, evaluations, the check), skips it and gets None back (the caller
        comes back to it later, waiting then)."""
        h = stage_hash(kind, config, inputs)
        folder = self.dir / rel.format(hash=h)
        lock = self._lock(folder, wait=False)
        if lock is None and defer:
            self.log(f"[yfpo run] {name}: another process is on it, coming back later")
            return None
        if lock is None:
            self.log(f"[yfpo run] {name}: another process is on it, waiting for it")
            lock = self._lock(folder, wait=True)
        try:
            return self._stage_locked(name, kind, h, folder, config, inputs, fn, meta)
        finally:
            lock.close()

    def _stage_locked(self, name, kind, h, folder, config, inputs, fn, meta) -> dict:
        rec = self._cached(name, kind, h, folder, meta)
        if rec is not None:
            return rec
        entry = self._begin(name, kind, h, folder, config, inputs, meta)
        t0 = time.time()
        try:
            outputs = fn(folder)
        except (KeyboardInterrupt, StageFailed):
            raise
        except Exception as e:
            raise self._failed([entry], [folder], e) from e
        return self._finish(entry, folder, config, inputs, outputs, time.time() - t0)

    def _entry(self, name, kind, h, folder, meta) -> dict:
        entry = {"name": name, "kind": kind, "dir": str(folder.relative_to(self.dir)), "hash": h, **(meta or {})}
        self.index["stages"] = [s for s in self.index["stages"] if s["name"] != name] + [entry]
        return entry

    def _cached(self, name, kind, h, folder, meta) -> dict | None:
        """The done record when the folder holds this stage finished with hash h (logged, indexed), else None."""
        done = folder / "done.json"
        rec = json.loads(done.read_text()) if done.exists() else None
        if rec is not None and rec.get("hash") == h and "outputs" in rec:  # (a stage's own done.json is not ours)
            entry = self._entry(name, kind, h, folder, meta)
            entry.update(status="done", cached=True, time_s=rec.get("time_s"))  # the time it took when it ran
            self.log(f"[yfpo run] {name}: done before, skipped ({entry['dir']})")
            self._write_index()
            return rec
        return None

    def _begin(self, name, kind, h, folder, config, inputs, meta) -> dict:
        """Mark the stage running (index, log, hook) and record its config in the folder; returns its entry."""
        from yfpo.utils import atomic_write_json, now, remove_stale_tmp

        entry = self._entry(name, kind, h, folder, meta)
        resumed = folder.exists()
        if resumed:
            remove_stale_tmp(folder)  # temp files of writes a kill interrupted
        entry["status"] = "running"
        self._write_index()
        self.log(f"[yfpo run] {name}: {'resuming' if resumed else 'running'} -> {entry['dir']}")
        if self.hook is not None:
            self.hook(name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            folder / "stage.json",
            {"name": name, "kind": kind, "hash": h, "config": config, "inputs": inputs, "started": now()},
        )
        return entry

    def _failed(self, entries: list[dict], folders: list[Path], e: Exception) -> StageFailed:
        for entry in entries:
            entry["status"] = "failed"
        self._write_index()
        msg = str(e).splitlines()[0] if str(e) else ""
        names = " + ".join(entry["name"] for entry in entries)
        where = folders[0] if len(folders) == 1 else f"{folders[0].parent} ({', '.join(f.name for f in folders)})"
        return StageFailed(
            f"stage {names} failed in {where}: {type(e).__name__}: {msg} -- fix the cause and "
            "rerun the same command (finished stages are kept; this one resumes); "
            "--debug shows the traceback"
        )

    def _finish(self, entry, folder, config, inputs, outputs, elapsed: float) -> dict:
        from yfpo.utils import atomic_write_json, now

        rec = {
            "name": entry["name"],
            "kind": entry["kind"],
            "hash": entry["hash"],
            "config": config,
            "inputs": inputs,
            "outputs": outputs,
            "time_s": round(elapsed, 2),
            "finished": now(),
        }
        atomic_write_json(folder / "done.json", rec)  # last: marks the stage finished
        entry["status"] = "done"
        entry["time_s"] = rec["time_s"]
        self._write_index()
        return rec

    def stage_group(
        self, units: list[dict], fn: Callable[[list[tuple[dict, Path]]], list[tuple[dict, float]]]
    ) -> list[dict]:
        """Several stages done by one call: `fn([(unit, folder), ...])` gets the units not finished before and not
        held by another process, and returns per unit (outputs, seconds of its share). Each unit keeps its
        own folder, hash, lock and done.json: a unit that another process holds is left to the caller (run
        alone later, as `stage` runs it), and a rerun after a kill or a failure redoes only the units without
        a done.json. units: dicts of `stage`'s arguments (name, kind, rel, config,
        inputs, fn: the unit alone, meta). Returns the units left for later (held by another process)."""
        held, mine = [], []  # mine: (unit, hash, folder, lock)
        try:
            for u in units:
                h = stage_hash(u["kind"], u["config"], u["inputs"])
                folder = self.dir / u["rel"].format(hash=h)
                lock = self._lock(folder, wait=False)
                if lock is None:
                    self.log(f"[yfpo run] {u['name']}: another process is on it, coming back later")
                    held.append(u)
                elif self._cached(u["name"], u["kind"], h, folder, u.get("meta")) is not None:
                    lock.close()
                else:
                    mine.append((u, h, folder, lock))
            if mine:
                entries = [
                    self._begin(u["name"], u["kind"], h, folder, u["config"], u["inputs"], u.get("meta"))
                    for u, h, folder, _ in mine
                ]
                folders = [folder for _, _, folder, _ in mine]
                try:
                    results = fn([(u, folder) for u, _, folder, _ in mine])
                except (KeyboardInterrupt, StageFailed):
                    raise
                except Exception as e:
                    raise self._failed(entries, folders, e) from e
                for entry, (u, _, folder, _), (outputs, secs) in zip(entries, mine, results):
                    self._finish(entry, folder, u["config"], u["inputs"], outputs, secs)
        finally:
            for *_, lock in mine:
                lock.close()
        return held

    # -- the run, step by step
    def run(self) -> Path:
        plan = make_plan(self.rc)  # everything validated before the first folder is made
        self.rc.methods = plan.methods  # the recorded config shows each method's neurons and gamma
        self._start()
        t0 = time.time()
        dpo_family = any(k.get("trainer", "dpo") == "dpo" for k in plan.methods.values())
        # Neurons and pairs need only the model: when another process on this run dir holds one, this one does
        # the other, and the base model's evaluation (it needs neither) while it waits; the same while another
        # process computes the reference log-probs every training waits for.
        neurons = self.neuron_sets(plan, defer=True)
        pairs = self.pairs(plan, defer=True) if dpo_family else (None, None)  # GRPO samples its own completions
        if neurons is None or pairs is None:
            self.evaluate_base_meanwhile()
        if neurons is None:
            neurons = self.neuron_sets(plan)
        if pairs is None:
            pairs = self.pairs(plan)
        # independent units are deferred when another process on this run dir holds them, then waited for
        check_later = plan.check is not None and self.causal_check(plan, neurons["own"], defer=True) is None
        refs: dict = {}
        if plan.ref_logps and dpo_family:
            refs = self.references(plan, neurons, pairs, defer=True)
            if not refs:  # another process holds every group: no training can start yet
                self.evaluate_base_meanwhile()
                refs = self.references(plan, neurons, pairs)
        # trainings another process holds are waited for only after evaluating what is trained already, so no
        # process idles while there is work; so are the trainings whose reference group another process holds
        waiting = [k for k in plan.train if self._needs_ref(plan, k) and k not in refs]
        trained, held = self.train_all(plan, neurons, pairs, refs, only=[k for k in plan.train if k not in waiting])
        self.evaluate(trained)
        if waiting:
            refs = self.references(plan, neurons, pairs)
            more, held_more = self.train_all(plan, neurons, pairs, refs, only=waiting)
            self.evaluate(more, base=False)
            held += held_more
        if held:
            rest = self.train_all(plan, neurons, pairs, refs, only=held, defer=False)[0]
            self.evaluate(rest, base=False)
        if check_later:
            self.causal_check(plan, neurons["own"])
        self.index["time_s_this_invocation"] = round(time.time() - t0, 2)
        self._write_index()
        return self.report()

    def _start(self) -> None:
        from yfpo.config import save_config
        from yfpo.utils import remove_stale_tmp

        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.dir, recursive=False)
        save_config(self.rc, self.dir / "config.yaml")
        self.mid = model_identity(self.rc.model)

    def evaluate_base_meanwhile(self) -> None:
        """The base model's evaluation units that no other process holds (the rest are left to the final
        evaluation, which waits for them): work for a process that would otherwise wait for a held stage."""
        if self.rc.eval.base:
            self.log("[yfpo run] evaluating the base model while another process holds the next stage")
            self.evaluate_model("base", None, self.rc.model, {"model": self.mid}, defer=True)

    def neuron_sets(self, plan: Plan, defer: bool = False) -> dict[str, tuple[Path, str]] | None:
        """Stage 1 and the control sets the methods need: {key: (NeuronSet path, stage hash)}; key "own" and the
        run's kind name the run's own set. defer: None when another process is finding the run's own set."""
        from yfpo.config import to_dict
        from yfpo.neurons.controls import kind_of_method

        def find(name: str, kind: str, cfg, defer: bool = False) -> tuple[Path, str] | None:
            def run_find(folder: Path) -> dict:
                cfg.out = str(folder / "neurons.json")
                return {"neurons": self._rel(self.runners["neurons"](cfg))}

            rec = self.stage(
                name, kind, "stages/neurons-{hash}", to_dict(cfg), {"model": self.mid}, run_find, defer=defer
            )
            return None if rec is None else (self.dir / rec["outputs"]["neurons"], rec["hash"])

        own = find("neurons", "neurons", plan.neurons, defer)  # the run's own set: the one the report summarises
        if own is None:
            return None
        sets = {"own": own, kind_of_method(plan.neurons.method): own}
        for kind, cfg in plan.selections.items():
            sets[kind] = find(f"neurons/{kind}", "neurons_selection", cfg)
        for key in plan.controls:
            kind, _, s = key.partition("-s")
            seed = int(s) if s else plan.neurons.seed

            def run_control(folder: Path, kind=kind, seed=seed) -> dict:
                out = self.runners["control"](kind, own[0], folder / "neurons.json", seed)
                return {"neurons": self._rel(out)}

            rec = self.stage(
                f"neurons/{key}",
                "neurons_control",
                f"stages/neurons-{kind}-{{hash}}",
                {"kind": kind, "seed": seed},
                {"neurons": own[1]},
                run_control,
            )
            sets[key] = (self.dir / rec["outputs"]["neurons"], rec["hash"])
        return sets

    def causal_check(self, plan: Plan, own: tuple[Path, str], defer: bool = False) -> dict | None:
        from yfpo.config import to_dict

        ccfg = plan.check

        def run_check(folder: Path) -> dict:
            ccfg.neurons = str(own[0])
            ccfg.out_dir = str(folder)
            res = self.runners["check"](ccfg)
            paths = {k: self._rel(v) if Path(v).exists() else str(v) for k, v in (res.get("paths") or {}).items()}
            return {"paths": paths, "verdict_text": res.get("verdict_text")}

        return self.stage(
            "check",
            "check",
            "stages/check-{hash}",
            to_dict(ccfg),
            {"model": self.mid, "neurons": own[1]},
            run_check,
            defer=defer,
        )

    def pairs(self, plan: Plan, defer: bool = False) -> tuple[Path, str] | None:
        """Stage 2 (or the run's pairs_file): (pairs path, hash of its contents or of the stage); defer: None
        when another process is sampling them."""
        from yfpo.config import to_dict
        from yfpo.utils import sha256_file

        if plan.pairs is None:
            path = Path(self.rc.pairs_file)
            return path, sha256_file(path)[:10]
        pcfg = plan.pairs

        def run_pairs(folder: Path) -> dict:
            pcfg.out_dir = str(folder)
            path = Path(self.runners["pairs"](pcfg))
            summ = json.loads((folder / "summary.json").read_text())
            if summ["pairs"] == 0:
                raise StageFailed(
                    f"stage pairs produced no pairs ({folder}/summary.json: {summ['questions']} "
                    f"questions, sample accuracy {summ['sample_accuracy']}); raise pairs.limit or pairs.k"
                )
            return {"pairs": self._rel(path), "n_pairs": summ["pairs"], "by_source": summ["pairs_by_source"]}

        rec = self.stage(
            "pairs", "pairs", "stages/pairs-{hash}", to_dict(pcfg), {"model": self.mid}, run_pairs, defer=defer
        )
        return None if rec is None else (self.dir / rec["outputs"]["pairs"], rec["hash"])

    def references(
        self, plan: Plan, neurons: dict, pairs: tuple[Path, str], defer: bool = False
    ) -> dict[tuple[str, int], tuple[Path, str]]:
        """Reference log-probs (+ m_ref of every NeuronSet the group's methods use), computed once per group of
        (method, seed) with the same tokenization settings: {(method, seed): (file, stage hash)}. defer: a group
        another process holds is skipped (its members are missing from the dict); the others are done."""
        from yfpo.utils import stable_hash

        groups: dict[str, list[tuple[str, int]]] = {}
        for (m, seed), tcfg in plan.train.items():
            if not self._needs_ref(plan, (m, seed)):
                continue
            key = stable_hash({k: getattr(tcfg, k) for k in REF_KEYS if hasattr(tcfg, k)}, n=10)
            groups.setdefault(key, []).append((m, seed))
        out = {}
        for key, members in groups.items():
            sets = sorted({neuron_key(plan.methods[m]["neurons"], seed) for m, seed in members})
            paths = {k: str(neurons[k][0]) for k in sets}
            tcfg = plan.train[members[0]]
            settings = {k: getattr(tcfg, k) for k in REF_KEYS if hasattr(tcfg, k)}

            def run_ref(folder: Path, tcfg=tcfg, paths=paths) -> dict:
                probe = dataclasses.replace(tcfg, model=self.rc.model, pairs=str(pairs[0]), output_dir=str(folder))
                return {"ref_logps": self._rel(self.runners["reference"](probe, paths, folder))}

            name = "reference" if len(groups) == 1 else f"reference/{key}"
            rec = self.stage(
                name,
                "reference",
                "stages/reference-{hash}",
                settings,
                {"model": self.mid, "pairs": pairs[1], "neurons": {k: neurons[k][1] for k in sets}},
                run_ref,
                defer=defer,
            )
            if rec is None:
                continue
            # a training reads the log-probs and its own set's m_ref (its neurons hash is its own input), so its
            # hash depends on the reference's model, pairs and settings, not on which other sets the file holds:
            # adding a seed (a new random set) recomputes the file but retrains nothing
            ref_id = stable_hash({"model": self.mid, "pairs": pairs[1], "settings": settings}, n=10)
            for member in members:
                out[member] = (self.dir / rec["outputs"]["ref_logps"], ref_id)
        return out

    @staticmethod
    def _needs_ref(plan: Plan, key: tuple[str, int]) -> bool:
        """Whether the training `key` reads a reference file (the run's reference stage runs, and it is not GRPO,
        whose reference, if beta > 0, is TRL's)."""
        return plan.ref_logps and plan.methods[key[0]].get("trainer") != "grpo"

    def train_all(
        self,
        plan: Plan,
        neurons: dict,
        pairs: tuple[Path, str],
        refs: dict,
        only: list[tuple[str, int]] | None = None,
        defer: bool = True,
    ) -> tuple[dict[tuple[str, int], dict], list[tuple[str, int]]]:
        """Stage 3: every method x seed (or `only` these), in plan order: ({(method, seed): done record}, the ones
        another process holds). defer False: wait for those instead (the second list is then empty)."""
        trained: dict[tuple[str, int], dict] = {}
        held: list[tuple[str, int]] = []
        for key in only if only is not None else plan.train:
            rec = self._train_one(plan, neurons, pairs, refs, *key, plan.train[key], defer)
            if rec is None:
                held.append(key)
            else:
                trained[key] = rec
        return trained, held

    def _train_one(self, plan, neurons, pairs, refs, method, seed, probe, defer) -> dict | None:
        from yfpo.config import to_dict

        keys = plan.methods[method]
        npath, nhash = neurons[neuron_key(keys["neurons"], seed)]
        ref = refs.get((method, seed))

        grpo = keys.get("trainer") == "grpo"

        def run_train(folder: Path, method=method, seed=seed, keys=keys, npath=npath, ref=ref) -> dict:
            tcfg = train_config(self.rc, method, keys, seed, pairs[0], npath, folder, ref[0] if ref else None)
            kind = "grpo" if grpo else "train"
            if self.rc.launch and self.runners[kind] is RUNNERS[kind]:  # (a test's own runner runs in-process)
                out = launch_training(tcfg, self.rc.launch, kind)
            else:
                out = Path(self.runners[kind](tcfg))
            final = out / "final"
            if not final.exists():
                raise StageFailed(f"stage train/{method}-s{seed}: {final} was not written; see {out}")
            return {"final": self._rel(final), "run_dir": self._rel(out)}

        inputs = {"model": self.mid, "neurons": nhash, "pairs": pairs[1], **({"reference": ref[1]} if ref else {})}
        if grpo:
            from yfpo.resume import file_identity

            inputs = {"model": self.mid, "neurons": nhash, "questions_file": file_identity(probe.questions_file)}
        return self.stage(
            f"train/{method}-s{seed}",
            "train",
            f"train/{method}-s{seed}-{{hash}}",
            to_dict(probe),
            inputs,
            run_train,
            meta={"method": method, "seed": seed, "neurons": keys["neurons"], "gamma": keys.get("gamma")},
            defer=defer,
        )

    def evaluate(self, trained: dict[tuple[str, int], dict], base: bool = True) -> None:
        """Stage 4: every benchmark (and pair discrimination) for the base model and every trained model."""
        targets: list[tuple[str, int | None, str, dict]] = []
        if self.rc.eval.base and base:
            targets.append(("base", None, self.rc.model, {"model": self.mid}))
        for (method, seed), rec in trained.items():
            targets.append((method, seed, str(self.dir / rec["outputs"]["final"]), {"train": rec["hash"]}))
        later: list[Callable[[], Any]] = []
        for method, seed, model_path, m_in in targets:
            later += self.evaluate_model(method, seed, model_path, m_in, defer=True)
        for unit in later:
            unit()

    def evaluate_model(
        self, method: str, seed: int | None, model_path: str, m_in: dict, defer: bool = False
    ) -> list[Callable[[], Any]]:
        """Every benchmark (and discrimination) of one model; returns the units deferred (held by another
        process), each a no-argument call that waits for it."""
        from yfpo.config import to_dict
        from yfpo.utils import stable_hash

        ev, rc = self.rc.eval, self.rc
        hashable = {
            k: v
            for k, v in to_dict(ev).items()
            if k not in ("benches", "base", "discrimination_batch_size", "tasks", "mmlu", "mmlu_batch_size")
            and not (k in _EVAL_KEY_DEFAULTS and v == _EVAL_KEY_DEFAULTS[k])
        }
        tag = "base" if seed is None else f"{method}-s{seed}"
        group = f"eval/{tag}-{stable_hash({'eval': hashable, 'in': m_in}, n=10)}"
        meta = {"method": method, "seed": seed}
        later: list[Callable[[], Any]] = []

        def unit(*args, **kw) -> None:
            if self.stage(*args, **kw, defer=defer) is None:
                later.append(lambda: self.stage(*args, **kw))

        from yfpo.resume import file_identity as _file_id

        specs = {name: (spec, path) for (name, spec), path in zip(ev.task_specs("eval.tasks").items(), ev.tasks)}
        # the EvalConfig every benchmark of this model is evaluated under, as keyword settings (run_evals'), with
        # the run's dtype and device
        common = {k: getattr(ev, k) for k in eval_field_names() if k not in ("benches", "tasks", "hub", "overwrite")}
        common.update(dtype=rc.dtype, device=rc.device)

        def outputs(s: dict) -> dict:
            prim = s.get("primary", "flexible")
            return {"accuracy": s["accuracy"][prim]["acc"], "n": s["n"], "primary": prim}

        def job(bench: str, folder: Path) -> dict:
            spec = specs.get(bench, (None, None))[0]
            return {"bench": bench, "out_dir": str(folder), **({"spec": spec} if spec is not None else {})}

        benches = [*ev.benches, *specs]
        units = []
        for bench in benches:
            spec, spec_path = specs.get(bench, (None, None))
            task_in = {"task": _file_id(spec_path), "task_file": _file_id(spec.file)} if spec else {}

            def run_bench(folder: Path, bench=bench) -> dict:
                return outputs(self.runners["evals"](model_path, [job(bench, folder)], **common)[0])

            units.append(
                dict(
                    name=f"eval/{tag}/{bench}",
                    kind="eval",
                    rel=f"{group}/{bench}",
                    config={**hashable, "bench": bench},
                    inputs={**m_in, **task_in},
                    fn=run_bench,
                    meta={**meta, "bench": bench},
                )
            )

        def run_benches(claimed: list[tuple[dict, Path]]) -> list[tuple[dict, float]]:
            """The benchmarks not done yet, in one pass over the model (yfpo.eval.bench.run_evals); each
            stage's time is its share (by generated tokens) of the whole call, model loading included."""
            t0 = time.time()
            jobs = [job(u["meta"]["bench"], folder) for u, folder in claimed]
            summaries = self.runners["evals"](model_path, jobs, **common)
            wall, shares = time.time() - t0, [s.get("time_s") or 0.0 for s in summaries]
            return [
                (outputs(s), wall * (x / sum(shares) if sum(shares) else 1 / len(shares)))
                for s, x in zip(summaries, shares)
            ]

        for u in self.stage_group(units, run_benches):
            if defer:
                later.append(lambda u=u: self.stage(**u))
            else:
                self.stage(**u)
        if ev.discrimination:

            def run_disc(folder: Path) -> dict:
                d = self.runners["discrimination"](
                    model_path,
                    limit=ev.discrimination,
                    out_dir=str(folder),
                    batch_size=ev.discrimination_batch_size,
                    dtype=rc.dtype,
                    device=rc.device,
                )
                return {"accuracy": d["accuracy"], "n": d["n"]}

            unit(
                f"eval/{tag}/discrimination",
                "discrimination",
                f"{group}/discrimination",
                {"n": ev.discrimination},
                m_in,
                run_disc,
                meta={**meta, "bench": "discrimination"},
            )
        if ev.mmlu:

            def run_mmlu(folder: Path) -> dict:
                m = self.runners["mmlu"](
                    model_path,
                    per_subject=ev.mmlu,
                    out_dir=str(folder),
                    data_dir=ev.data_dir,
                    batch_size=ev.mmlu_batch_size,
                    dtype=rc.dtype,
                    device=rc.device,
                )
                return {part: {"accuracy": m[part]["acc"], "n": m[part]["n"]} for part in ("non_math", "redux_ok")}

            unit(
                f"eval/{tag}/mmlu",
                "mmlu",
                f"{group}/mmlu",
                {"per_subject": ev.mmlu},
                m_in,
                run_mmlu,
                meta={**meta, "bench": "mmlu"},
            )
        return later

    def report(self) -> Path:
        """Stage 5 (when `report` is on); returns the report path, else run.json."""
        if not self.rc.report or not self.write_report:
            return self.dir / "run.json"
        from yfpo.report.build import build_report

        path = build_report(self.dir)
        self.index["report"] = self._rel(path)
        self._write_index()
        return Path(path)


def run_pipeline(
    rc: RunConfig,
    *,
    hook: Callable[[str], None] | None = None,
    log: Callable[[str], None] = print,
    runners: dict[str, Callable] | None = None,
    write_report: bool = True,
) -> Path:
    """Run (or resume) the whole pipeline; returns the report path (run.json when report is off).

    `hook(stage_name)` is called before a stage starts working (tests use it to interrupt a run);
    `runners` replaces stage functions by kind (neurons, control, check, pairs, reference, train, evals: a
    model's pending benchmarks in one call, or eval: one benchmark a call, discrimination, mmlu)."""
    return Pipeline(rc, hook=hook, log=log, runners=runners, write_report=write_report).run()
