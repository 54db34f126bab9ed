"""`EvalConfig`: one evaluation's settings, carried whole through `yfpo eval`, the pipeline's eval section,
run_evals / run_eval and the job that writes each benchmark's folder (yfpo.eval.bench).

`validate()` checks every setting, the benchmarks' names (with a did-you-mean) and data files, the task specs
and the shots file, with no model I/O: the CLI and the pipeline's plan call it before a model is loaded, so a
typo costs a line, not a model load. Messages name the key as the caller spells it (`prefix`: "eval." in a
run config, "--" on the command line).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from yfpo.engine.backends import BACKEND_NAMES
from yfpo.engine.prompts import TEMPLATE_NAME

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class EvalConfig:
    benches: list[str] = field(default_factory=lambda: ["gsm8k"])  # built-in benchmarks (yfpo.data.problems)
    tasks: list[str] = field(default_factory=list)  # task spec YAMLs (any benchmark file), evaluated like benches
    limit: int | None = None  # first N items of each benchmark (None: all)
    shots: int = 0  # n-shot exemplars (0 = zero-shot chat CoT)
    shots_file: str | None = None  # exemplars from this JSONL instead of GSM8K train
    protocol: str = TEMPLATE_NAME  # prompting protocol (yfpo.engine.prompts), saved with the result
    max_new_tokens: int = 256
    batch_size: int = 16
    backend: str = "auto"  # generation backend (yfpo.engine.backends)
    dtype: str = "float32"
    device: str = "cpu"
    data_dir: str | None = None  # benchmark data folder (default: $YFPO_DATA_DIR, then ../shared/data)
    hub: bool | None = None  # fetch a benchmark missing locally from the HF Hub (None: $YFPO_HUB)
    overwrite: bool = False  # empty a folder made by another config first
    # sampled metrics (pass@k, maj@k, avg@n) when samples > 1 or temperature > 0
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sampling seed (per item: derived from seed and item id)

    @property
    def sampled(self) -> bool:
        return self.samples > 1 or self.temperature > 0

    def replace(self, **changes) -> EvalConfig:
        """A copy with `changes`; an unknown name is a TypeError with the closest field."""
        unknown = [k for k in changes if k not in field_names(type(self))]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unexpected setting {unknown[0]!r}{_did_you_mean(unknown[0], field_names(type(self)))}"
            )
        return dataclasses.replace(self, **changes)

    def validate(self, prefix: str = "", extra_benches: tuple[str, ...] = (), data: bool = True) -> None:
        """Raise ValueError/FileNotFoundError (one line naming the key) on the first bad setting, benchmark name,
        missing data file, task spec or shots file. `extra_benches`: names the caller handles itself
        (discrimination, mmlu); data=False skips the benchmarks' data files (a caller that passes its own items)."""
        from yfpo.engine.prompts import get_protocol

        def key(k: str) -> str:
            if prefix == "--":  # the command line's flags: --bench, --task, --max-new-tokens
                return prefix + {"benches": "bench", "tasks": "task"}.get(k, k.replace("_", "-"))
            return prefix + k

        for k in ("max_new_tokens", "batch_size", "limit"):
            v = getattr(self, k)
            if v is None and k == "limit":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                tail = " (or null for all items)" if k == "limit" else ""
                raise ValueError(f"{key(k)} must be an integer >= 1{tail}, got {v!r}")
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 0:
            raise ValueError(f"{key('shots')} must be an integer >= 0, got {self.shots!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"{key('samples')} must be an integer >= 1, got {self.samples!r}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"{key('temperature')} must be >= 0 and {key('top_p')} in (0, 1], got {self.temperature}, {self.top_p}"
            )
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(
                f"{key('samples')} is {self.samples} at temperature 0: greedy samples are identical; "
                f"set {key('temperature')} > 0"
            )
        if self.backend not in BACKEND_NAMES:
            raise ValueError(
                f"{key('backend')}: unknown backend {self.backend!r}{_did_you_mean(self.backend, BACKEND_NAMES)}; "
                f"known: {', '.join(BACKEND_NAMES)}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"{key('dtype')}: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        try:
            get_protocol(self.protocol)
        except ValueError as e:
            raise ValueError(f"{key('protocol')}: {e}") from None
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise FileNotFoundError(f"{key('data_dir')}: folder {self.data_dir} does not exist")
        if self.shots_file is not None and not Path(self.shots_file).is_file():
            raise FileNotFoundError(f"{key('shots_file')}: {self.shots_file} does not exist")
        names = [*self.benches]
        for b in self.benches:
            if b not in extra_benches:
                check_bench(b, self.data_dir, key("benches"), data=data, hub=self.hub, extra=extra_benches)
        for name in self.task_specs(key("tasks")):
            names.append(name)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"{key('benches')}/{key('tasks')}: {', '.join(dup)} named twice (give each task spec its own name)"
            )

    def task_specs(self, where: str = "tasks") -> dict:
        """{name: TaskSpec} of `tasks`, each parsed (a bad spec names its file:line) and its data file present."""
        from yfpo.data.taskspec import load_spec

        out = {}
        for path in self.tasks:
            if not Path(path).is_file():
                raise ValueError(f"{where}: task spec {path} does not exist")
            spec = load_spec(path)
            if not Path(spec.file).is_file():
                raise FileNotFoundError(f"{where}: task spec {path}: its file {spec.file} does not exist")
            out[spec.name or Path(path).stem] = spec
        return out


def field_names(cls: type = EvalConfig) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(str(word), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_bench(
    bench: str, data_dir: str | None, where: str, *, data: bool = True, hub: bool | None = None, extra=()
) -> None:
    """A benchmark name is known (else: did you mean ...) and, with data=True, its data file is on disk (or the
    Hub is allowed: hub=True or YFPO_HUB=1; it is then fetched when the benchmark loads)."""
    from yfpo.data.problems import BENCHMARKS, GROUPS, candidate_data_dirs, find_data_file, hub_allowed

    known = [*BENCHMARKS, *GROUPS, *extra]
    if bench not in BENCHMARKS and bench not in GROUPS:
        raise ValueError(
            f"{where}: unknown benchmark {bench!r}{_did_you_mean(bench, known)}; known: {', '.join(known)} "
            "(or a task spec file for any other benchmark)"
        )
    if not data:
        return
    for sub in GROUPS.get(bench, [bench]):
        b = BENCHMARKS[sub]
        if find_data_file(b.file, data_dir) is None and not (b.hub is not None and hub_allowed(hub)):
            looked = ", ".join(str(d / b.file) for d in candidate_data_dirs(data_dir))
            raise FileNotFoundError(
                f"{where}: benchmark {sub!r} has no data file (looked in {looked}); "
                "set the data folder (--data-dir / eval.data_dir) or YFPO_DATA_DIR"
            )
