"""The run config of `yfpo run` (RunConfig, its eval section) and the methods it expands into one training config
per method x seed (TrainConfig, or GRPORunConfig for `trainer: grpo`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yfpo.config import from_dict, load_config
from yfpo.data.problems import candidate_data_dirs, find_data_file
from yfpo.eval.config import EvalConfig
from yfpo.eval.mmlu import DATA_FILES as MMLU_FILES
from yfpo.neurons.controls import kind_of_method, normalise_kind
from yfpo.pipeline.launch import check_launch
from yfpo.train.config import TrainConfig
from yfpo.train.grpo_config import GRPORunConfig

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

    def validate(self, prefix: str = "run config: eval.", **kw) -> "EvalSection":
        """EvalConfig's checks (benchmarks with did-you-mean and their data, limits, sampling, protocol, task specs),
        no run-owned key set here, and the run's own units (discrimination, MMLU and its data files); returns self."""
        owned = [k for k in _EVAL_RUN_OWNED if getattr(self, k) != getattr(EvalConfig(), k)]
        if owned:
            raise ValueError(f"run config: eval.{owned[0]} is set by the run (dtype, device: the top-level keys)")
        v = self.discrimination_batch_size
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"run config: eval.discrimination_batch_size must be an integer >= 1, got {v!r}")
        v = self.discrimination
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"run config: eval.discrimination must be an integer >= 0 (0 = skip), got {v!r}")
        super().validate(prefix=prefix, **kw)
        v = self.mmlu
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"run config: eval.mmlu: expected questions per subject (an integer >= 0), got {v!r}")
        for rel in MMLU_FILES if self.mmlu else ():
            if find_data_file(rel, self.data_dir) is None:
                looked = ", ".join(str(d / rel) for d in candidate_data_dirs(self.data_dir))
                raise FileNotFoundError(f"run config: eval.mmlu: no {rel} (looked in {looked}); set eval.data_dir")
        return self


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
    # use these pairs instead of building them: any source yfpo.data.pair_sources reads (a JSONL/JSON/Parquet/CSV
    # file, a datasets save_to_disk folder, a hub id owner/name[:subset][@split])
    pairs_file: str | None = None
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

    def validate(self) -> "RunConfig":
        """The run's own settings (each stage's config validates its own); returns self."""
        if not self.methods:
            raise ValueError("run config: `methods` is empty; name at least one (e.g. dpo: {gamma: 0})")
        if not self.seeds:
            raise ValueError("run config: `seeds` is empty")
        if self.model.startswith(("/", "./", "../", "~")) and not Path(self.model).expanduser().exists():
            raise FileNotFoundError(f"run config: model folder {self.model} does not exist")
        if self.pairs_file:
            from yfpo.data.pair_sources import HUB_ID

            where = Path(self.pairs_file.rpartition("@")[0] or self.pairs_file)
            hub = HUB_ID.match(self.pairs_file) and not Path(self.pairs_file).suffix
            if not (Path(self.pairs_file).exists() or where.is_dir() or hub):
                raise FileNotFoundError(f"run config: pairs_file {self.pairs_file} does not exist")
        check_launch(self.launch)
        return self


def load_run_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> RunConfig:
    return load_config(RunConfig, path, overrides)


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
    if keys.get("trainer") == "grpo":
        return grpo_config(rc, method, keys, seed, neurons_path, out_dir)
    paths = {"pairs": pairs_path, "neurons": neurons_path, "output_dir": out_dir}
    if ref_logps is not None:
        paths["ref_logps"] = ref_logps
    return _method_config(rc, TrainConfig, rc.train, "train", method, keys, seed, paths)


def grpo_config(rc: RunConfig, method: str, keys: dict, seed: int, neurons_path: Path, out_dir: Path):
    """GRPORunConfig for one `trainer: grpo` method x seed (validated): the `grpo` section, the method's keys,
    then the run's model/neurons/output/seed (dtype and device unless the grpo section sets them)."""
    paths = {"neurons": neurons_path, "output_dir": out_dir}
    return _method_config(rc, GRPORunConfig, rc.grpo, "grpo", method, keys, seed, paths)


def _method_config(rc: RunConfig, cls, section: dict, where: str, method: str, keys: dict, seed: int, paths: dict):
    """cls from the run's `where` section, the method's own keys (METHOD_KEYS aside), then the run's model,
    seed, name and `paths`; validated, errors naming the method and section."""
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


def ref_settings(tcfg) -> dict:
    """The REF_KEYS of a TrainConfig as its record() (the older flat form) holds them; a TRL option among them
    enters only when set (as the older `trl:` section had it)."""
    rec = tcfg.record()
    return {k: rec[k] if k in rec else rec["trl"][k] for k in REF_KEYS if k in rec or k in rec["trl"]}
