"""The local executor: the graph's nodes in order, in this process. Other processes may work on the same store
(`yfpo run --workers N` starts N - 1 helpers running this same executor): a node another process holds is left
for later and the next ready node is done instead, so no process idles while there is work; when every ready node
is held, it waits for the first of them."""

from __future__ import annotations

from yfpo.pipeline.node import Graph, Node
from yfpo.pipeline.store import StageStore


def run_graph(graph: Graph, store: StageStore) -> dict[str, dict]:
    """Every node's done record, {name: record}. The graph's order is the priority: after each stage done, the
    first ready node (all it reads finished) not held by another process is next."""
    done: dict[str, dict] = {}
    held: set[str] = set()  # reported held once (not logged again)

    def ready(n: Node) -> bool:
        return n.name not in done and all(d in done for d in n.deps)

    pending = list(graph)
    while pending:
        progressed = False
        for node in [n for n in pending if ready(n)]:
            if node.group is not None:
                members = [n for n in pending if n.group == node.group and ready(n)]
                recs, others = store.run_group([(n, _deps(n, done)) for n in members], quiet=held)
                done.update(recs)
                held.update(n.name for n in others)
                progressed = bool(recs)
            else:
                rec = store.run(node, _deps(node, done), wait=False, quiet=node.name in held)
                if rec is None:
                    held.add(node.name)
                else:
                    done[node.name], progressed = rec, True
            if progressed:
                break
        pending = [n for n in pending if n.name not in done]
        if pending and not progressed:  # every ready node is held by another process: wait for the first one
            node = next(n for n in pending if ready(n))
            done[node.name] = store.run(node, _deps(node, done), wait=True)
            pending.remove(node)
    return done


def _deps(node: Node, done: dict[str, dict]) -> dict[str, dict]:
    return {d: done[d] for d in node.deps}
