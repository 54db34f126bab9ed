"""yfpo: neuron-guided preference optimization for mathematical reasoning.

The stage functions and their configs, importable from here (docs/api.md shows a whole run):

    find_neurons(NeuronsConfig)        -> NeuronSet file          (yfpo.neurons)
    build_pairs(PairsConfig)           -> pairs.jsonl             (yfpo.pairs)
    read_pairs(source)                 -> rows, format            (yfpo.data.pair_sources: files, folders, hub ids)
    train_dpo(TrainConfig)             -> run directory, final/   (yfpo.train.trainer.train; TrainConfig is a
    YFPOTrainer, make_trainer                                        trl.DPOConfig, YFPOTrainer a trl.DPOTrainer)
    run_eval(model, bench, ...)        -> summary                 (yfpo.eval; EvalConfig)
    run_pipeline(load_run_config(p))   -> report.html             (yfpo.pipeline; build_report rebuilds one)
    load_model(name_or_path)           -> (model, tokenizer)

They are imported on first use (PEP 562): `import yfpo` stays cheap, `yfpo.TrainConfig` imports TRL.
"""

from yfpo.version import __version__

_EXPORTS = {
    "NeuronsConfig": "yfpo.neurons.config",
    "NeuronSet": "yfpo.neurons.neuronset",
    "find_neurons": "yfpo.neurons.find",
    "PairsConfig": "yfpo.pairs.config",
    "build_pairs": "yfpo.pairs.build",
    "read_pairs": "yfpo.data.pair_sources",
    "TrainConfig": "yfpo.train.config",
    "YFPOTrainer": "yfpo.train.trainer",
    "make_trainer": "yfpo.train.trainer",
    "train_dpo": "yfpo.train.trainer",  # yfpo.train is the package; its train() function is exported as train_dpo
    "EvalConfig": "yfpo.eval.config",
    "run_eval": "yfpo.eval.bench",
    "run_evals": "yfpo.eval.bench",
    "RunConfig": "yfpo.pipeline",
    "load_run_config": "yfpo.pipeline",
    "run_pipeline": "yfpo.pipeline",
    "build_report": "yfpo.report.build",
    "load_model": "yfpo.models.loading",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), "train" if name == "train_dpo" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'yfpo' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
