"""The run's stage graph, built from the plan: each stage kind adds its nodes from its own module of
yfpo.pipeline.stages (neurons, pairs, check, reference, train, evaluate), in the order one process runs them."""

from __future__ import annotations

from yfpo.neurons.controls import kind_of_method
from yfpo.pipeline.config import RunConfig
from yfpo.pipeline.node import Graph, model_identity
from yfpo.pipeline.plan import Plan
from yfpo.pipeline.stages import check, evaluate, neurons, pairs, reference, train


def build_graph(rc: RunConfig, plan: Plan) -> Graph:
    """The run's stages in order: neuron sets, pairs, the causal check, reference log-probs, every training, every
    evaluation (base model first). Each stage kind adds its nodes in its own module of yfpo.pipeline.stages."""
    g = Graph()
    mid = model_identity(rc.model)
    sets = neurons.add(g, plan, mid)
    sets[kind_of_method(plan.neurons.method)] = sets["own"]
    pairs_in = pairs.add(g, rc, plan, mid)
    check.add(g, plan, mid, sets["own"])
    refs = reference.add(g, rc, plan, mid, sets, pairs_in)
    trained = train.add(g, rc, plan, mid, sets, pairs_in, refs)
    evaluate.add(g, rc, mid, trained)
    return g
