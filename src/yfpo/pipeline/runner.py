"""`run_pipeline`: plan (every stage's config validated) -> stage graph -> an executor runs it against the run
directory's stage store -> report.

Run directory (runs/<name>/ unless out_root says otherwise):
    config.yaml, run.json                    the resolved run config; the index of every stage (yfpo.pipeline.store)
    stages/neurons-<hash>/neurons.json       NeuronSet (the run's own; another selection a method names, e.g.
                                             `neurons: lape`, gets its own folder of the same kind)
    stages/neurons-random-<hash>/            a control set (random per training seed, or flipped)
    stages/check-<hash>/                     causal ablation check (when `check:` is set)
    stages/pairs-<hash>/pairs.jsonl          pairs (+ samples.jsonl, summary.json)
    stages/reference-<hash>/                 reference log-probs + m_ref, shared by every method and seed
    train/<method>-s<seed>-<hash>/           trainer run dir (final/, metrics.jsonl, done.json)
    eval/<method>-s<seed>-<hash>/<bench>/    items.jsonl + summary.json; .../discrimination/
    eval/base-<hash>/<bench>/                the untrained model
    report/report.md, report.html            built last

A stage folder's name carries the hash of its resolved config plus the hashes of the stages it reads
(yfpo.pipeline.node), so changing anything a stage depends on reruns it and everything downstream, while unchanged
stages are found finished and skipped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from yfpo.config import save_config, to_dict
from yfpo.pipeline.config import RunConfig
from yfpo.pipeline.executors import EXECUTORS, local
from yfpo.pipeline.graph import build_graph
from yfpo.pipeline.node import relative
from yfpo.pipeline.plan import make_plan
from yfpo.pipeline.store import StageStore
from yfpo.report.build import build_report
from yfpo.utils import remove_stale_tmp


def run_pipeline(
    rc: RunConfig,
    *,
    executor: str = "local",
    address: str | None = None,
    hook: Callable[[str], None] | None = None,
    log: Callable[[str], None] = print,
    write_report: bool = True,
) -> Path:
    """Run (or resume) the whole pipeline; returns the report path (run.json when report is off or write_report
    is False, as in `--workers` helper processes). executor: local | ray (address: a Ray cluster, "auto" for the
    one this machine belongs to; None starts a local Ray instance). hook(stage name) is called before a stage
    starts working."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    plan = make_plan(rc)  # everything validated before the first folder is made
    rc.methods = plan.methods  # the recorded config shows each method's neurons and gamma
    graph = build_graph(rc, plan)
    run_dir = Path(rc.out_root) / rc.name
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(run_dir, recursive=False)
    save_config(rc, run_dir / "config.yaml")
    store = StageStore(run_dir, to_dict(rc), log=log, hook=hook)
    t0 = time.time()
    if executor == "ray":
        from yfpo.pipeline.executors import ray as ray_executor  # lazy: ray is an optional extra

        ray_executor.run_graph(graph, store, address=address)
    else:
        local.run_graph(graph, store)
    store.index["time_s_this_invocation"] = round(time.time() - t0, 2)
    store.write_index()
    if not rc.report or not write_report:
        return run_dir / "run.json"
    path = build_report(run_dir)
    store.index["report"] = relative(path, run_dir)
    store.write_index()
    return Path(path)
