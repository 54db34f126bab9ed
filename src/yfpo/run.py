"""`yfpo run CONFIG`: the whole pipeline, each stage cached by the hash of its inputs and config.

    neurons -> (causal check) -> pairs -> train each method x seed -> eval (base + every model) -> report

Run directory (runs/<name>/ unless out_root says otherwise):
    config.yaml                              the resolved run config
    run.json                                 index: every stage, its folder, hash and status
    stages/neurons-<hash>/neurons.json       NeuronSet
    stages/check-<hash>/                     causal ablation check (when `check:` is set)
    stages/pairs-<hash>/pairs.jsonl          pairs (+ samples.jsonl, summary.json)
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

DEFAULT_METHODS = {
    "dpo": {"gamma": 0.0},
    "yfpo": {"gamma": 1.0},
    # FDT changes only the output layer's gradient, which LoRA freezes: the FDT methods fine-tune fully
    "dpo_fdt": {"gamma": 0.0, "fdt": True, "lora": False, "lr": 5e-6},
    "yfpo_fdt": {"gamma": 1.0, "fdt": True, "lora": False, "lr": 5e-6},
}
# config keys that only say where or how visibly a stage works; they do not enter its hash
_NO_HASH = {"out", "out_dir", "output_dir", "progress", "neurons", "pairs", "pairs_path", "neurons_path",
            "train_file", "pairs_file", "neurons_file", "neuron_set", "save_dir", "run_dir", "model", "resume", "name"}
# keys added after runs were cached: left out of the hash while at the value that reproduces the old behaviour,
# so adding them does not invalidate finished stages
_NO_HASH_AT_DEFAULT = {"criterion": "diff", "exclude_quantile": 0.99}


@dataclass
class EvalSection:
    benches: list[str] = field(default_factory=lambda: ["gsm8k"])
    limit: int | None = 50
    shots: int = 0
    max_new_tokens: int = 256
    batch_size: int = 16
    backend: str = "auto"
    discrimination: int = 200  # held-out solution pairs for pair discrimination (0 = skip)
    discrimination_batch_size: int = 8
    base: bool = True  # also evaluate the untrained model (method "base")
    data_dir: str | None = None


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
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_METHODS)))
    eval: EvalSection = field(default_factory=EvalSection)
    report: bool = True


class StageFailed(RuntimeError):
    pass


def load_run_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> RunConfig:
    from yfpo.config import load_config

    return load_config(RunConfig, path, overrides)


# ----------------------------------------------------------------------------- hashing

def model_identity(name_or_path: str) -> dict:
    """What a model's hash depends on: the name, and for a local folder its config and weight files."""
    p = Path(name_or_path)
    if p.is_dir():
        from yfpo.utils import sha256_file

        files = {}
        for f in sorted(p.iterdir()):
            if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt"):
                files[f.name] = sha256_file(f) if f.stat().st_size < (64 << 20) else f"{f.stat().st_size}:{f.stat().st_mtime_ns}"
        return {"path": str(p.resolve()), "files": files}
    return {"name": name_or_path}


def stage_hash(kind: str, config: dict, inputs: dict) -> str:
    """Hash of a stage: its kind, its config without location/verbosity keys, and its inputs' hashes."""
    from yfpo.utils import stable_hash

    cfg = {k: v for k, v in config.items()
           if k not in _NO_HASH and not (k in _NO_HASH_AT_DEFAULT and v == _NO_HASH_AT_DEFAULT[k])}
    return stable_hash({"kind": kind, "config": cfg, "inputs": inputs}, n=10)


# ----------------------------------------------------------------------------- stage configs

def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _pick(names: set[str], *candidates: str) -> str | None:
    for c in candidates:
        if c in names:
            return c
    return None


def train_config(rc: RunConfig, method: str, seed: int, pairs_path: Path, neurons_path: Path, out_dir: Path,
                 cls: type | None = None):
    """TrainConfig for one method x seed: the shared `train` keys, then the method's keys, then the run's
    model/pairs/neurons/output/seed."""
    from yfpo.config import from_dict

    if cls is None:
        from yfpo.train.config import TrainConfig
    else:
        TrainConfig = cls

    names = _fields(TrainConfig)
    data = {**rc.train, **(rc.methods.get(method) or {})}
    where = {
        "model": _pick(names, "model"),
        "pairs": _pick(names, "pairs", "pairs_path", "train_file", "data"),
        "neurons": _pick(names, "neurons", "neurons_path", "neuron_set"),
        "out": _pick(names, "out_dir", "output_dir", "out"),
        "name": _pick(names, "name"),
        "seed": _pick(names, "seed"),
        "dtype": _pick(names, "dtype"),
        "device": _pick(names, "device"),
    }
    missing = [k for k in ("model", "pairs", "out") if where[k] is None]
    if missing:
        raise ValueError(f"{TrainConfig.__name__} has no field for {missing} (fields: {sorted(names)})")
    values = {"model": rc.model, "pairs": str(pairs_path), "neurons": str(neurons_path), "out": str(out_dir),
              "seed": seed, "dtype": rc.dtype, "device": rc.device, "name": f"{rc.name}/{method}-s{seed}"}
    for logical, fname in where.items():
        if fname is None:
            continue
        if logical in ("dtype", "device") and fname in data:
            continue  # the train section may choose its own precision/device
        data[fname] = values[logical]
    return from_dict(TrainConfig, data, prefix=f"methods.{method}/train.")


# ----------------------------------------------------------------------------- the pipeline

def _run_neurons(cfg) -> Path:
    from yfpo.neurons.find import find_neurons

    return find_neurons(cfg)


def _run_check(cfg) -> dict:
    from yfpo.neurons.check import causal_check

    return causal_check(cfg)


def _run_pairs(cfg) -> Path:
    from yfpo.pairs.build import build_pairs

    return build_pairs(cfg)


def _run_train(cfg) -> Path:
    from yfpo.train.trainer import train

    return train(cfg)


def _run_eval(model_path: str, bench: str, **kw) -> dict:
    from yfpo.eval.bench import run_eval

    return run_eval(model_path, bench, **kw)


def _run_discrimination(model_path: str, *, limit: int, out_dir: str, batch_size: int, dtype: str, device: str) -> dict:
    from yfpo.eval.discrimination import run_discrimination
    from yfpo.models.loading import load_model

    model, tok = load_model(model_path, dtype=dtype, device=device)
    return run_discrimination(model, tok, limit=limit, out_dir=out_dir, batch_size=batch_size)


RUNNERS = {"neurons": _run_neurons, "check": _run_check, "pairs": _run_pairs, "train": _run_train,
           "eval": _run_eval, "discrimination": _run_discrimination}


class Pipeline:
    def __init__(self, rc: RunConfig, hook: Callable[[str], None] | None = None, log: Callable[[str], None] = print,
                 runners: dict[str, Callable] | None = None, train_config_cls: type | None = None):
        self.rc = rc
        self.runners = {**RUNNERS, **(runners or {})}
        self.train_config_cls = train_config_cls
        self.dir = Path(rc.out_root) / rc.name
        self.hook = hook
        self.log = log
        self.index: dict[str, Any] = {"name": rc.name, "run_dir": str(self.dir), "stages": []}

    # -- bookkeeping
    def _rel(self, p: str | Path) -> str:
        """A path inside the run dir, relative to it (so the run dir can be moved)."""
        return str(Path(p).resolve().relative_to(self.dir.resolve()))

    def _write_index(self) -> None:
        from yfpo.config import to_dict
        from yfpo.utils import atomic_write_json, now

        self.index.update(config=to_dict(self.rc), updated=now())
        atomic_write_json(self.dir / "run.json", self.index)

    def stage(self, name: str, kind: str, rel: str, config: dict, inputs: dict, fn: Callable[[Path], dict],
              meta: dict | None = None) -> dict:
        """Run `fn(folder)` unless the folder's done.json exists; returns the done record."""
        from yfpo.utils import atomic_write_json, now

        h = stage_hash(kind, config, inputs)
        folder = self.dir / rel.format(hash=h)
        entry = {"name": name, "kind": kind, "dir": str(folder.relative_to(self.dir)), "hash": h, **(meta or {})}
        self.index["stages"] = [s for s in self.index["stages"] if s["name"] != name] + [entry]
        done = folder / "done.json"
        rec = json.loads(done.read_text()) if done.exists() else None
        if rec is not None and rec.get("hash") == h and "outputs" in rec:  # (a stage's own done.json is not ours)
            entry["status"] = "cached"
            self.log(f"[yfpo run] {name}: done before, skipped ({entry['dir']})")
            self._write_index()
            return rec
        resumed = folder.exists()
        entry["status"] = "running"
        self._write_index()
        self.log(f"[yfpo run] {name}: {'resuming' if resumed else 'running'} -> {entry['dir']}")
        if self.hook is not None:
            self.hook(name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "stage.json", {"name": name, "kind": kind, "hash": h, "config": config,
                                                  "inputs": inputs, "started": now()})
        t0 = time.time()
        outputs = fn(folder)
        rec = {"name": name, "kind": kind, "hash": h, "config": config, "inputs": inputs, "outputs": outputs,
               "time_s": round(time.time() - t0, 2), "finished": now()}
        atomic_write_json(done, rec)  # last: marks the stage finished
        entry["status"] = "done"
        entry["time_s"] = rec["time_s"]
        self._write_index()
        return rec

    # -- the run
    def run(self) -> Path:
        from yfpo.config import from_dict, save_config, to_dict
        from yfpo.neurons.config import CheckConfig, NeuronsConfig
        from yfpo.pairs.config import PairsConfig

        rc = self.rc
        if not rc.methods:
            raise ValueError("run config: `methods` is empty; name at least one (e.g. dpo: {gamma: 0})")
        if not rc.seeds:
            raise ValueError("run config: `seeds` is empty")
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(rc, self.dir / "config.yaml")
        t0 = time.time()
        mid = model_identity(rc.model)

        # 1 neurons
        ncfg = from_dict(NeuronsConfig, {"dtype": rc.dtype, "device": rc.device, **rc.neurons, "model": rc.model},
                         prefix="neurons.")
        nd = to_dict(ncfg)

        def run_neurons(folder: Path) -> dict:
            ncfg.out = str(folder / "neurons.json")
            return {"neurons": self._rel(self.runners["neurons"](ncfg))}

        nrec = self.stage("neurons", "neurons", "stages/neurons-{hash}", nd, {"model": mid}, run_neurons)
        neurons_path = self.dir / nrec["outputs"]["neurons"]
        n_in = {"neurons": nrec["hash"]}

        # 1b causal check
        if rc.check is not None:
            ccfg = from_dict(CheckConfig, {"dtype": rc.dtype, "device": rc.device, **rc.check, "model": rc.model},
                             prefix="check.")

            def run_check(folder: Path) -> dict:
                ccfg.neurons = str(neurons_path)
                ccfg.out_dir = str(folder)
                res = self.runners["check"](ccfg)
                paths = {k: self._rel(v) if Path(v).exists() else str(v)
                         for k, v in (res.get("paths") or {}).items()}
                return {"paths": paths, "verdict_text": res.get("verdict_text")}

            self.stage("check", "check", "stages/check-{hash}", to_dict(ccfg), {"model": mid, **n_in}, run_check)

        # 2 pairs
        if rc.pairs_file:
            from yfpo.utils import sha256_file

            pairs_path = Path(rc.pairs_file)
            if not pairs_path.exists():
                raise FileNotFoundError(f"run config: pairs_file {pairs_path} does not exist")
            p_in = {"pairs": sha256_file(pairs_path)[:10]}
        else:
            pcfg = from_dict(PairsConfig, {"dtype": rc.dtype, "device": rc.device, **rc.pairs, "model": rc.model},
                             prefix="pairs.")

            def run_pairs(folder: Path) -> dict:
                pcfg.out_dir = str(folder)
                path = Path(self.runners["pairs"](pcfg))
                summ = json.loads((folder / "summary.json").read_text())
                if summ["pairs"] == 0:
                    raise StageFailed(f"pairs stage produced no pairs ({folder}/summary.json: {summ['questions']} "
                                      f"questions, sample accuracy {summ['sample_accuracy']}); raise pairs.limit or pairs.k")
                return {"pairs": self._rel(path), "n_pairs": summ["pairs"],
                        "by_source": summ["pairs_by_source"]}

            prec = self.stage("pairs", "pairs", "stages/pairs-{hash}", to_dict(pcfg), {"model": mid}, run_pairs)
            pairs_path = self.dir / prec["outputs"]["pairs"]
            p_in = {"pairs": prec["hash"]}

        # 3 train
        trained: dict[tuple[str, int], dict] = {}
        for method in rc.methods:
            for seed in rc.seeds:
                probe = train_config(rc, method, seed, pairs_path, neurons_path, Path("."), self.train_config_cls)
                tcfg_d = to_dict(probe)

                def run_train(folder: Path, method=method, seed=seed) -> dict:
                    tcfg = train_config(rc, method, seed, pairs_path, neurons_path, folder, self.train_config_cls)
                    out = Path(self.runners["train"](tcfg))
                    final = out / "final"
                    if not final.exists():
                        raise StageFailed(f"train {method} seed {seed}: {final} was not written")
                    return {"final": self._rel(final), "run_dir": self._rel(out)}

                rec = self.stage(f"train/{method}-s{seed}", "train", f"train/{method}-s{seed}-{{hash}}", tcfg_d,
                                 {"model": mid, **n_in, **p_in}, run_train, meta={"method": method, "seed": seed})
                trained[(method, seed)] = rec

        # 4 eval
        ev = to_dict(rc.eval)
        ev_hashable = {k: v for k, v in ev.items() if k not in ("benches", "base", "discrimination_batch_size")}
        targets: list[tuple[str, int | None, str, dict]] = []
        if rc.eval.base:
            targets.append(("base", None, rc.model, {"model": mid}))
        for (method, seed), rec in trained.items():
            targets.append((method, seed, str(self.dir / rec["outputs"]["final"]), {"train": rec["hash"]}))
        for method, seed, model_path, m_in in targets:
            from yfpo.utils import stable_hash

            tag = "base" if seed is None else f"{method}-s{seed}"
            group = f"eval/{tag}-{stable_hash({'eval': ev_hashable, 'in': m_in}, n=10)}"
            meta = {"method": method, "seed": seed}
            for bench in rc.eval.benches:
                def run_eval_stage(folder: Path, bench=bench, model_path=model_path) -> dict:
                    s = self.runners["eval"](model_path, bench, limit=rc.eval.limit, shots=rc.eval.shots, out_dir=str(folder),
                                 batch_size=rc.eval.batch_size, max_new_tokens=rc.eval.max_new_tokens,
                                 data_dir=rc.eval.data_dir, backend=rc.eval.backend, dtype=rc.dtype, device=rc.device)
                    prim = s.get("primary", "flexible")
                    return {"accuracy": s["accuracy"][prim]["acc"], "n": s["n"], "primary": prim}

                self.stage(f"eval/{tag}/{bench}", "eval", f"{group}/{bench}", {**ev_hashable, "bench": bench}, m_in,
                           run_eval_stage, meta={**meta, "bench": bench})
            if rc.eval.discrimination:
                def run_disc(folder: Path, model_path=model_path) -> dict:
                    d = self.runners["discrimination"](model_path, limit=rc.eval.discrimination, out_dir=str(folder),
                                                       batch_size=rc.eval.discrimination_batch_size, dtype=rc.dtype,
                                                       device=rc.device)
                    return {"accuracy": d["accuracy"], "n": d["n"]}

                self.stage(f"eval/{tag}/discrimination", "discrimination", f"{group}/discrimination",
                           {"n": rc.eval.discrimination}, m_in, run_disc, meta={**meta, "bench": "discrimination"})

        # 5 report
        self.index["time_s_this_invocation"] = round(time.time() - t0, 2)
        self._write_index()
        if rc.report:
            from yfpo.report.build import build_report

            path = build_report(self.dir)
            self.index["report"] = self._rel(path)
            self._write_index()
            return Path(path)
        return self.dir / "run.json"


def run_pipeline(rc: RunConfig, *, hook: Callable[[str], None] | None = None, log: Callable[[str], None] = print,
                 runners: dict[str, Callable] | None = None, train_config_cls: type | None = None) -> Path:
    """Run (or resume) the whole pipeline; returns the report path (run.json when report is off).

    `hook(stage_name)` is called before a stage starts working (tests use it to interrupt a run);
    `runners` replaces stage functions by kind (neurons, check, pairs, train, eval, discrimination)."""
    return Pipeline(rc, hook=hook, log=log, runners=runners, train_config_cls=train_config_cls).run()
