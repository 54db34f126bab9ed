"""Stage nodes: one per stage folder (kind, config, inputs -> hash, the function that does the work, the
stages it reads, the resources it needs). Nodes are plain data: an executor runs them in any order their `deps`
allow, in this process, in helper processes or as Ray tasks.

A node's hash is that of its kind, its config without location/verbosity fields (NO_HASH) and its inputs (the
hashes of the stages it reads, the model's fingerprint), so changing anything a stage depends on gives it a new
folder, while an unchanged stage is found finished and skipped. Code changes do not change hashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yfpo import resume
from yfpo.utils import stable_hash

# per stage kind, the config fields that only say where a stage reads/writes or how visibly it works: they do
# not enter its hash (what they point to enters through the stage's inputs: model identity, input stage hashes)
NO_HASH = {
    "neurons": {"model", "out", "progress"},
    "neurons_selection": {"model", "out", "progress"},  # another selection a method names (e.g. neurons: lape)
    "check": {"model", "neurons", "out_dir", "progress"},
    "pairs": {"model", "out_dir", "progress"},
    "train": {"model", "pairs", "neurons", "output_dir", "name", "ref_logps", "keep_checkpoints"},
}
# keys that choose only the form a result is stored in (a LoRA run's final/: adapter or merged; loaders take both),
# hashed at the value every folder made before they were storage keys was hashed with, so that changing them (or
# their default, merge_final: True -> False) redoes no stage
HASH_AS = {"train": {"merge_final": True}}

# per stage kind, config fields added after runs were made: left out of the hash at their defaults (those runs stay
# cached), part of it otherwise
ADDED_AT_DEFAULT = {"pairs": {"mode": "default"}}


def stage_hash(kind: str, config: dict, inputs: dict) -> str:
    """Hash of a stage: its kind, its config without location/verbosity fields (and fields added later, at their
    defaults), and its inputs' hashes."""
    added = ADDED_AT_DEFAULT.get(kind, {})
    cfg = {k: v for k, v in config.items() if k not in NO_HASH.get(kind, ()) and not (k in added and v == added[k])}
    cfg.update({k: v for k, v in HASH_AS.get(kind, {}).items() if k in cfg})
    return stable_hash({"kind": kind, "config": cfg, "inputs": inputs}, n=10)


def model_identity(name_or_path: str) -> dict:
    """What a model's stage hash depends on: {"name": yfpo.resume.model_identity} (the one model fingerprint: a hub
    id or alias as itself, a local folder by its name and a fingerprint of its files)."""
    return {"name": resume.model_identity(name_or_path)}


def resources(device: str) -> dict[str, float]:
    """What a stage on `device` asks an executor for (Ray: num_cpus / num_gpus of its task)."""
    return {"num_cpus": 1, "num_gpus": 1 if str(device).startswith("cuda") else 0}


@dataclass
class Node:
    """One stage. `run(node, folder, deps, run_dir) -> outputs` does the work in `folder`; `deps` maps the names in
    `self.deps` to their done records (outputs hold paths relative to run_dir). `group`: nodes that may share one
    call, `group_run(items, run_dir) -> [(outputs, seconds)]` with items [(node, folder, deps)] (a model's
    benchmarks, generated in one pass); each still has its own folder, hash and done.json."""

    name: str
    kind: str
    rel: str  # folder under the run dir; "{hash}" is replaced by the node's hash
    config: dict
    inputs: dict
    run: Callable[..., dict]
    args: dict[str, Any] = field(default_factory=dict)  # what `run` needs besides the config (picklable)
    deps: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in run.json beside the stage
    group: str | None = None
    group_run: Callable[..., list] | None = None
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0})
    hash: str = ""

    def __post_init__(self):
        self.hash = stage_hash(self.kind, self.config, self.inputs)

    def folder(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.rel.format(hash=self.hash)


class Graph:
    """Nodes in the order a single process runs them (every node after the nodes it reads)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise ValueError(f"stage graph: two stages named {node.name!r}")
        missing = [d for d in node.deps if d not in self.nodes]
        if missing:
            raise ValueError(f"stage graph: {node.name} reads {missing[0]!r}, which is not an earlier stage")
        self.nodes[node.name] = node
        return node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def __iter__(self):
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)


class StageFailed(RuntimeError):
    """A stage could not finish; the message is one line: what failed, in which folder, what to do."""


def relative(path: str | Path, run_dir: Path) -> str:
    """A path inside the run dir, relative to it (so the run dir can be moved, or mounted elsewhere on a cluster)."""
    return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))


def output_path(run_dir: Path, record: dict, key: str) -> Path:
    """The file or folder a finished stage's done record names under `key`."""
    return Path(run_dir) / record["outputs"][key]
