"""The Ray executor: each node (or group of a model's benchmarks) is a Ray task with the resources its stage's
config asks for (num_cpus, num_gpus), started once the tasks of the stages it reads have finished; every task works
on the same stage store, which must therefore be a folder all Ray nodes see at the same path (NFS, a shared disk).
A task re-checks its folder before working (done.json, lock), so a rerun after a failure or a killed worker
reruns only the stages without a done.json, and Ray's own retry of a task whose worker died resumes that stage in
its folder. The cluster recipe: docs/cluster.md."""

from __future__ import annotations

import ray

from yfpo.pipeline.node import Graph, Node, StageFailed
from yfpo.pipeline.store import StageStore


def _run_task(run_dir: str, config: dict, nodes: list[Node], *dep_results: dict) -> dict[str, dict]:
    """One Ray task: `nodes` (one, or a group sharing one call) against the store in run_dir; dep_results: the
    done records of the stages they read ({name: record} per upstream task)."""
    done = {name: rec for res in dep_results for name, rec in res.items()}
    store = StageStore(run_dir, config, log=print)
    items = [(n, {d: done[d] for d in n.deps}) for n in nodes]
    if len(items) == 1:
        return {nodes[0].name: store.run(*items[0], wait=True)}
    records, held = store.run_group(items)
    for n in held:  # another process holds it: wait for it
        records[n.name] = store.run(n, {d: done[d] for d in n.deps}, wait=True)
    return records


def run_graph(graph: Graph, store: StageStore, address: str | None = None) -> dict[str, dict]:
    """Submit every node as a task (a group as one task), wait for all; returns {name: done record}. address:
    a running cluster ("auto", "ray://host:10001"); None: the running Ray instance of this process, or a local one."""
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, include_dashboard=False)
    task = ray.remote(_run_task)
    refs: dict[str, ray.ObjectRef] = {}
    for node in graph:
        if node.name in refs:
            continue
        members = [n for n in graph if n.group == node.group] if node.group else [node]
        deps = sorted({d for n in members for d in n.deps})
        upstream = list({id(refs[d]): refs[d] for d in deps}.values())
        opts = {
            "num_cpus": max(n.resources.get("num_cpus", 1) for n in members),
            "num_gpus": max(n.resources.get("num_gpus", 0) for n in members),
            "name": node.group or node.name,
        }
        ref = task.options(**opts).remote(str(store.dir.resolve()), store.config, members, *upstream)
        refs.update({n.name: ref for n in members})
    done: dict[str, dict] = {}
    try:
        results = ray.get(list({id(r): r for r in refs.values()}.values()))
    except ray.exceptions.RayTaskError as e:  # a stage failed: its one-line StageFailed, not Ray's traceback
        if isinstance(getattr(e, "cause", None), StageFailed):
            raise StageFailed(str(e.cause)) from None
        raise
    for res in results:
        done.update(res)
    for node in graph:  # the driver's index records every stage (workers' run.json writes may interleave)
        store.record(node, done[node.name])
    return done
