"""yfpo.neurons: math-neuron discovery (stage 1).

- lrp.py: AttnLRP rules on one model instance (``with attnlrp(model): ...``), reversible;
- relevance.py: batched per-sample neuron relevance over teacher-forced corpora (resumable);
- select.py: math score, top-k / per-layer / random selection;
- find.py: ``find_neurons(NeuronsConfig) -> Path`` (the NeuronSet file); neuronset.py: the file format;
- controls.py: control sets for the neuron reward (random with the same per-layer counts, flipped signs);
- check.py: ``causal_check(CheckConfig) -> dict`` (ablation vs random neurons); show.py; cli.py.
"""
