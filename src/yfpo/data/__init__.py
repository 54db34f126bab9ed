"""Data: benchmark loaders (Problem), preference-pair formats, corpora for neuron discovery."""

from yfpo.data.pairs import Pair, load_pairs, validate_pair, write_pairs
from yfpo.data.problems import BENCHMARKS, DataFormatError, DataNotFoundError, Problem, load_benchmark, read_jsonl
from yfpo.data.splits import load_part  # also registers the wordprob_* benchmarks' loader in yfpo.data.problems

__all__ = [
    "BENCHMARKS",
    "DataFormatError",
    "DataNotFoundError",
    "Pair",
    "Problem",
    "load_benchmark",
    "load_pairs",
    "load_part",
    "read_jsonl",
    "validate_pair",
    "write_pairs",
]
