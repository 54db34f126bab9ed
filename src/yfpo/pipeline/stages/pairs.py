"""Stage 2: preference pairs from the model's graded samples (or the run's pairs_file, which is no stage)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from yfpo.config import to_dict
from yfpo.data.pair_sources import source_identity
from yfpo.pairs.build import build_pairs
from yfpo.pipeline.config import RunConfig
from yfpo.pipeline.node import Graph, Node, StageFailed, output_path, relative, resources
from yfpo.pipeline.plan import Plan
from yfpo.utils import sha256_file, stable_hash


@dataclass(frozen=True)
class PairsInput:
    """Where the trainings read pairs: the pairs stage (`node`), or a file (`file`); `hash` enters their hashes."""

    hash: str
    node: str | None = None
    file: str | None = None

    def path(self, deps: dict, run_dir: Path) -> Path:
        return Path(self.file) if self.node is None else output_path(run_dir, deps[self.node], "pairs")

    @property
    def deps(self) -> tuple[str, ...]:
        return () if self.node is None else (self.node,)


def run_pairs(node: Node, folder: Path, deps: dict, run_dir: Path) -> dict:
    path = Path(build_pairs(dataclasses.replace(node.args["cfg"], out_dir=str(folder))))
    summ = json.loads((folder / "summary.json").read_text())
    if summ["pairs"] == 0:
        raise StageFailed(
            f"stage pairs produced no pairs ({folder}/summary.json: {summ['questions']} "
            f"questions, sample accuracy {summ['sample_accuracy']}); raise pairs.limit or pairs.k"
        )
    return {"pairs": relative(path, run_dir), "n_pairs": summ["pairs"], "by_source": summ["pairs_by_source"]}


def add(g: Graph, rc: RunConfig, plan: Plan, mid: dict) -> PairsInput:
    if not any(k.get("trainer", "dpo") == "dpo" for k in plan.methods.values()):
        return PairsInput(hash="")  # only GRPO methods: they sample their own completions, no pairs
    if plan.pairs is None:
        src = Path(rc.pairs_file)  # a file by its bytes (as always); a datasets folder or hub id by source_identity
        h = sha256_file(src)[:10] if src.is_file() else stable_hash(source_identity(rc.pairs_file), n=10)
        return PairsInput(hash=h, file=str(rc.pairs_file))
    cfg = plan.pairs
    node = g.add(Node("pairs", "pairs", "stages/pairs-{hash}", to_dict(cfg), {"model": mid}, run_pairs,
                      args={"cfg": cfg}, resources=resources(cfg.device)))  # fmt: skip
    return PairsInput(hash=node.hash, node=node.name)
